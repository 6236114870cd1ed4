"""Sessions of the phone app: the cookie is an opaque id whose state is on the box, a visit to
/pair (a cross-site link arrives without the SameSite=Strict cookie) cannot replace a paired
session, and an open event stream ends within 2 s of the session, however busy the box is.

Fast tests use Flask's test client over a fake box; the end-to-end ones a real daemon and broker
and `vrmbox companion` serving HTTPS with a certificate of a CA made for the test."""
from __future__ import annotations

import base64
import datetime as dt
import json
import queue
import re
import sys
import threading
import time
from typing import Any, Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from companion_app import create_app, security
from companion_app.box import SUBSCRIBED, BoxDown, BoxRefused, BoxSlow
from device import pairing
from device.store import Store
from processes import Proc, vrmbox, wait_for
from provisioning import pki
from provisioning.launch import free_port
from test_companion_helpers import csrf_from, new_code, running_box

PHONE = {"phone": "ph-000000000001", "name": "Ann's phone", "created": 1, "last_seen": 1}
SID = "q" * 43                       # what the box hands out at pairing (token_urlsafe(32))
OPAQUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
STREAM_BOUND_S = 2.0


# ============================================================== a fake box (fast lane)
class FakeBox:
    """The Box interface with one phone; `paired` flips to end its session without any event
    (as expiry does); `slow` makes session checks time out; events() flows every `every_s`."""

    timeout = 5.0

    def __init__(self, every_s: float = 0.1) -> None:
        self.paired = True
        self.slow = False
        self.every_s = every_s
        self.calls: list[str] = []
        self.stop = threading.Event()

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        args = args or {}
        self.calls.append(op)
        if op == "phone_session":
            if self.slow and timeout is not None:
                raise BoxSlow("timed out")
            if not self.paired or args.get("secret") != SID:
                raise BoxRefused("not a paired phone")
            return dict(PHONE)
        if op == "pair_complete":
            self.paired = True
            return {"phone": PHONE["phone"], "name": args.get("name"), "secret": SID}
        if op == "phones":
            return [dict(PHONE)]
        if op in ("status", "settings"):
            return {}
        if op == "phone_unpair":
            self.paired = False
            return {"phone": args.get("phone"), "unpaired": True}
        return []

    def running(self) -> bool:
        return True

    def events(self, idle_s: float = 15.0) -> Iterator[dict[str, Any] | None]:
        """A busy box: a `changed` event every `every_s`, never `idle_s` of silence."""
        yield {"type": SUBSCRIBED}
        n = 0
        while not self.stop.wait(self.every_s):
            n += 1
            yield {"type": "changed", "op": "profile_set", "n": n}


@pytest.fixture
def fake() -> Iterator[FakeBox]:
    b = FakeBox()
    yield b
    b.stop.set()


def make(fake: FakeBox, **extra: Any) -> Any:
    return create_app({"BOX": fake, "SECRET_KEY": "k" * 64, "TESTING": True, "READ_CACHE_S": 0, **extra})


def set_cookies(resp: Any) -> list[str]:
    return resp.headers.getlist("Set-Cookie")


def pair_fake(c: Any) -> Any:
    token = csrf_from(c.get("/pair").get_data(as_text=True))
    r = c.post("/pair", data={"code": "12345 67890", "name": "Ann", "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/", r.get_data(as_text=True)[:300]
    return r


def test_the_session_cookie_is_the_opaque_id_and_nothing_else(fake):
    c = make(fake).test_client()
    r = pair_fake(c)
    session_cookies = [h for h in set_cookies(r) if h.startswith("vrmbox=")]
    assert len(session_cookies) == 1
    value = session_cookies[0].split(";", 1)[0].split("=", 1)[1]
    assert value == SID                       # the box's id itself: no contents, no signature
    attrs = session_cookies[0].lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    raw = security.derive_csrf("k" * 64, "session", SID)
    token = csrf_from(c.get("/settings/").get_data(as_text=True))
    assert raw not in value and token not in value


def test_a_get_to_pair_without_the_cookie_leaves_a_paired_session(fake):
    """A cross-site link to /pair arrives without the SameSite=Strict cookie; whatever its
    answer sets, a browser stores. The phone must still be paired on its next request."""
    app = make(fake)
    phone = app.test_client()
    pair_fake(phone)
    assert phone.get("/").status_code == 200
    stranger_view = app.test_client().get("/pair")        # no cookie sent, as Strict does
    assert stranger_view.status_code == 200
    names = [h.split("=", 1)[0] for h in set_cookies(stranger_view)]
    assert "vrmbox" not in names, set_cookies(stranger_view)
    for header in set_cookies(stranger_view):             # the browser keeps what it was given
        name, value = header.split(";", 1)[0].split("=", 1)
        phone.set_cookie(name, value)
    r = phone.get("/")
    assert r.status_code == 200, r.headers.get("Location")
    assert phone.get("/api/v1/session").get_json()["paired"] is True
    for path in ("/", "/settings/", "/pair", "/api/v1/session", "/static/app.css"):
        assert not [h for h in set_cookies(phone.get(path)) if h.startswith("vrmbox=")], path


def test_the_pairing_token_comes_from_its_own_cookie_not_a_session(fake):
    c = make(fake).test_client()
    r = c.get("/pair")
    headers = set_cookies(r)
    assert [h.split("=", 1)[0] for h in headers] == ["vrmbox-pair"], headers
    assert "httponly" in headers[0].lower() and "samesite=strict" in headers[0].lower()
    token = csrf_from(r.get_data(as_text=True))
    assert c.get("/pair").headers.getlist("Set-Cookie") == []   # handed out once
    # without the pairing cookie the same token is refused: it is bound to that cookie
    other = make(fake).test_client()
    r = other.post("/pair", data={"code": "12345 67890", "name": "x", "csrf_token": token})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    assert "pair_complete" not in fake.calls
    r = c.post("/pair", data={"code": "12345 67890", "name": "x", "csrf_token": token})
    assert r.status_code == 302 and "pair_complete" in fake.calls


def test_a_paired_session_survives_a_restart_of_the_app(fake):
    """Nothing of a session lives in the app's memory: a new process with the same key (the
    box's secret file) lets the same cookie in, with the same CSRF token on its forms."""
    first = make(fake).test_client()
    pair_fake(first)
    token = csrf_from(first.get("/settings/").get_data(as_text=True))
    again = make(fake).test_client()
    again.set_cookie("vrmbox", first.get_cookie("vrmbox").value)
    assert again.get("/").status_code == 200
    assert csrf_from(again.get("/settings/").get_data(as_text=True)) == token
    r = again.post("/settings/companion-only", data={"csrf_token": token, "value": "off"})
    assert r.status_code == 302


def test_a_message_is_shown_once_on_the_next_page(fake):
    c = make(fake).test_client()
    pair_fake(c)
    token = csrf_from(c.get("/settings/").get_data(as_text=True))
    c.post("/settings/companion-only", data={"csrf_token": token, "value": "off"})
    c.get("/static/app.css")                 # a stylesheet in between takes no message
    assert "Companion-only confirmation is off." in c.get("/settings/").get_data(as_text=True)
    assert "Companion-only confirmation is off." not in c.get("/settings/").get_data(as_text=True)


def test_a_cookie_the_box_does_not_know_gets_nothing(fake):
    c = make(fake).test_client()
    c.set_cookie("vrmbox", "z" * 43)
    assert c.get("/").status_code == 302
    assert c.get("/api/v1/profile").status_code == 401
    assert c.get("/events").status_code == 302


@pytest.mark.parametrize("how", ["expired", "slow"])
def test_a_busy_stream_closes_within_2s_when_the_session_ends(fake, how):
    """Events every 100 ms (the box never falls silent); the session ends without an event
    (expiry on the box) or the box cannot confirm it in time: the stream closes within 2 s.
    Read in this thread (the test client's stream keeps its context here); the events coming
    every 100 ms let the loop look at the clock."""
    c = make(fake).test_client()
    pair_fake(c)
    r = c.get("/events", buffered=False)
    chunks = iter(r.response)
    got = b""
    for chunk in chunks:                     # traffic flows through the stream
        got += chunk
        if b"event: changed" in got:
            break
    assert b"event: hello" in got
    t0 = time.monotonic()
    if how == "expired":
        fake.paired = False
    else:
        fake.slow = True
    rest, closed = b"", False
    deadline = t0 + STREAM_BOUND_S + 3
    for chunk in chunks:
        rest += chunk
        if time.monotonic() > deadline:
            break
    else:
        closed = True
    took = time.monotonic() - t0
    r.close()
    print(f"stream closed {took:.2f} s after the session ended ({how})")
    assert closed and took <= STREAM_BOUND_S, f"still open after {took:.2f} s"
    assert (b"event: unpaired" in rest) == (how == "expired")


# ============================================================== the box keeps the session
def test_the_box_ends_a_session_when_its_cookie_would_have(tmp_path):
    t = [1_800_000_000.0]
    store = Store.open(tmp_path / "box", clock=lambda: t[0])
    try:
        code = pairing.new_code(store)["code"]
        got = pairing.complete(store, code, "Ann's phone")
        assert pairing.session(store, got["secret"])["phone"] == got["phone"]
        assert pairing.SESSION_TTL_S == security.SESSION_TTL_S      # the cookie's life
        t[0] += pairing.SESSION_TTL_S - 1
        assert pairing.session(store, got["secret"])["phone"] == got["phone"]
        t[0] += 1
        with pytest.raises(pairing.PairingError, match="expired"):
            pairing.session(store, got["secret"])
        assert got["secret"] not in json.dumps(store.get_setting(pairing.PHONES_SETTING))
    finally:
        store.close()


# ============================================================== end to end: real daemon, HTTPS
class FromAddress(HTTPAdapter):
    """Requests sent from another local address: another client on the network."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture(scope="module")
def https_box(tmp_path_factory):
    """A daemon and broker, and `vrmbox companion` over HTTPS on loopback with a certificate
    of a CA made for this test; `restart()` restarts the app on the same port."""
    tmp = tmp_path_factory.mktemp("sessions")
    with running_box(tmp) as box:
        now = dt.datetime.now(dt.timezone.utc)
        ca = pki.make_ca("test CA", now)
        leaf = pki.issue_server(ca, ["127.0.0.1", "localhost"], now)
        tls = tmp / "tls"
        tls.mkdir()
        (tls / "ca.pem").write_bytes(ca.cert_pem)
        (tls / "companion.pem").write_bytes(leaf.cert_pem)
        (tls / "companion.key").write_bytes(leaf.key_pem)
        (tls / "companion.key").chmod(0o600)
        port = free_port()
        conf = tmp / "companion.toml"
        conf.write_text(f'[companion]\nbind = "127.0.0.1"\nport = {port}\n'
                        f'cert_file = "{tls / "companion.pem"}"\nkey_file = "{tls / "companion.key"}"\n')
        argv = [sys.executable, "-m", "vrmbox", "-v", "companion", "--config", str(conf),
                "--data-dir", str(box["data"]), "--no-mdns"]
        state: dict[str, Any] = {"proc": Proc(argv, tmp / "companion.log").start()}

        def restart() -> None:
            state["proc"].stop()
            state["proc"] = Proc(argv, tmp / "companion.log").start()
        try:
            yield {**box, "base": f"https://127.0.0.1:{port}", "ca": str(tls / "ca.pem"),
                   "restart": restart, "proc": lambda: state["proc"]}
        finally:
            state["proc"].stop()


def browser(hb: dict[str, Any], address: str = "127.0.0.1") -> requests.Session:
    s = requests.Session()
    s.trust_env = False            # else $REQUESTS_CA_BUNDLE would win over the box's CA
    s.verify = hb["ca"]
    s.mount("https://", FromAddress(address))
    return s


def pair_phone(hb: dict[str, Any], name: str) -> tuple[requests.Session, str]:
    """A phone's browser pairs through the form with the box's code; (session, phone id)."""
    phone = browser(hb)
    page = phone.get(hb["base"] + "/pair", timeout=10)
    r = phone.post(hb["base"] + "/pair", timeout=10, allow_redirects=False,
                   data={"code": new_code(hb["data"]), "name": name, "csrf_token": csrf_from(page.text)})
    assert r.status_code == 302 and r.headers["Location"] == "/", r.text[:300]
    me = phone.get(hb["base"] + "/api/v1/session", timeout=10).json()
    assert me["paired"] is True
    return phone, me["phone"]["phone"]


def unpair(hb: dict[str, Any], phone_id: str) -> None:
    vrmbox("phones", "unpair", phone_id, data_dir=hb["data"])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_e2e_a_copied_cookie_gets_nothing_once_the_phone_is_unpaired(https_box):
    hb = https_box
    phone, me = pair_phone(hb, "copied")
    value = phone.cookies.get("__Host-vrmbox")
    assert value and OPAQUE.match(value), value     # an opaque id: nothing to decode in it
    token = csrf_from(phone.get(hb["base"] + "/settings/", timeout=10).text)
    assert token not in value and "." not in value
    with pytest.raises(ValueError):
        json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    copy = browser(hb, "127.0.0.2")                 # the copy, sent from another address
    copy.cookies.set("__Host-vrmbox", value, domain="127.0.0.1", path="/", secure=True)
    # a bearer cookie: while the phone is paired the copy is the phone (HTTPS keeps it off the air)
    assert "ann@example.org" in copy.get(hb["base"] + "/api/v1/profile", timeout=10).text
    unpair(hb, me)
    # the app caches a session check for at most SESSION_CACHE_S
    wait_for(lambda: copy.get(hb["base"] + "/", timeout=10, allow_redirects=False).status_code == 302,
             timeout=security.SESSION_CACHE_S + 5, what="the copy refused")
    for path in ("/", "/mydata/", "/settings/", "/events"):
        r = copy.get(hb["base"] + path, timeout=10, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"] == "/pair", path
    r = copy.get(hb["base"] + "/api/v1/profile", timeout=10)
    assert r.status_code == 401 and "ann@example.org" not in r.text
    r = copy.put(hb["base"] + "/api/v1/profile/email", json={"value": "eve@example.org"},
                 headers={"X-CSRFToken": token}, timeout=10)
    assert r.status_code == 401
    hb["restart"]()                                 # and a restart of the app does not revive it
    assert copy.get(hb["base"] + "/api/v1/profile", timeout=10).status_code == 401
    assert "ann@example.org" in vrmbox("profile", "show", "--json", data_dir=hb["data"]).stdout


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_e2e_a_cross_site_link_to_pair_leaves_the_phone_paired(https_box):
    hb = https_box
    phone, me = pair_phone(hb, "linked")
    # the link from another site: no SameSite=Strict cookie is sent with it ...
    landed = requests.get(hb["base"] + "/pair", verify=hb["ca"], timeout=10)
    assert landed.status_code == 200 and "Pair this phone" in landed.text
    for cookie in landed.cookies:                    # ... and what its answer sets, the browser keeps
        phone.cookies.set_cookie(cookie)
    r = phone.get(hb["base"] + "/", timeout=10, allow_redirects=False)
    assert r.status_code == 200, r.headers.get("Location")
    assert phone.get(hb["base"] + "/api/v1/session", timeout=10).json()["phone"]["phone"] == me
    # it set only the pairing form's own cookie, never a session
    assert sorted(landed.cookies.keys()) == ["__Host-vrmbox-pair"]
    hb["restart"]()                                  # a phone stays paired across app restarts
    assert phone.get(hb["base"] + "/", timeout=10, allow_redirects=False).status_code == 200
    token = csrf_from(phone.get(hb["base"] + "/settings/", timeout=10).text)
    r = phone.post(hb["base"] + "/settings/companion-only", data={"csrf_token": token, "value": "off"},
                   timeout=10, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/settings/"
    assert any(p["phone"] == me for p in json.loads(vrmbox("phones", "--json", data_dir=hb["data"]).stdout))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_e2e_a_stream_closes_within_2s_of_unpair_while_events_flow(https_box):
    hb = https_box
    phone, me = pair_phone(hb, "streaming")
    stream = phone.get(hb["base"] + "/events", stream=True, timeout=10)
    assert stream.status_code == 200
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    ended = threading.Event()

    def read() -> None:
        try:
            for line in stream.iter_lines(decode_unicode=True):
                lines.put((time.monotonic(), line))
        except requests.RequestException:
            pass
        finally:
            ended.set()
    threading.Thread(target=read, daemon=True).start()
    stop = threading.Event()
    writes = [0]

    def traffic() -> None:
        """The box kept busy: a profile write (a `changed` event) every 300 ms."""
        from companion_app.box import Box
        b = Box(hb["socket"])
        while not stop.is_set():
            writes[0] += 1
            try:
                b.call("profile_set", {"name": "note", "value": f"busy {writes[0]}"})
            except (BoxDown, BoxRefused):
                pass
            stop.wait(0.3)     # paces the load; decides nothing
    threading.Thread(target=traffic, daemon=True).start()
    try:
        seen, deadline = 0, time.monotonic() + 20
        while seen < 3:                              # the stream relays the traffic
            at, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            seen += line == "event: changed"
        from companion_app.box import Box
        t0 = time.monotonic()
        Box(hb["socket"]).call("phone_unpair", {"phone": me})
        closed = ended.wait(STREAM_BOUND_S + 5)
        took = time.monotonic() - t0
        print(f"stream closed {took:.3f} s after unpair ({writes[0]} writes by then, one every 0.3 s)")
        assert closed and took <= STREAM_BOUND_S, f"still open {took:.2f} s after unpair"
        after = []
        while not lines.empty():
            after.append(lines.get()[1])
        assert "event: unpaired" in after
        assert "event: changed" not in after[after.index("event: unpaired"):]
    finally:
        stop.set()
        stream.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_e2e_sigterm_with_a_stream_open_stops_the_app_at_once(https_box):
    """`systemctl stop` sends SIGTERM: an open event stream used to hold the server's stop until
    systemd's kill 15 s later (exit -9). Now streams end first and the app exits in time."""
    import signal as _signal
    hb = https_box
    phone, _me = pair_phone(hb, "stopping")
    stream = phone.get(hb["base"] + "/events", stream=True, timeout=10)
    assert stream.status_code == 200
    first = next(stream.iter_lines(decode_unicode=True))           # the stream is live
    assert first.startswith("retry:"), first
    proc = hb["proc"]()
    t0 = time.monotonic()
    proc.proc.send_signal(_signal.SIGTERM)
    code = proc.proc.wait(timeout=10)
    took = time.monotonic() - t0
    print(f"the app stopped {took:.2f} s after SIGTERM with a stream open (exit {code})")
    assert code == 0 and took < 5, (code, took)
    hb["restart"]()                                                 # for the tests after this one


class _DownForSessions(FakeBox):
    """The box answers every operation but cannot confirm sessions (as in a restart's race: the
    check fails, the daemon is back by the time the page's own call goes out)."""

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        self.calls.append(op)
        if op == "phone_session":
            raise BoxDown("the box daemon closed the connection")
        if op == "profile":
            return {"email": "ann@example.org"}
        if op == "phones":
            return [dict(PHONE)]
        return {}


def test_a_made_up_cookie_while_the_box_is_down_reaches_neither_the_box_nor_its_cache():
    box = _DownForSessions()
    app = make(box)
    c = app.test_client()
    c.set_cookie("vrmbox", "A" * 20)                  # a value nobody was ever given
    try:
        for path in ("/api/v1/profile", "/api/v1/phones"):
            r = c.get(path)
            assert r.status_code == 503 and "ann@example.org" not in r.get_data(as_text=True), path
        page = c.get("/settings/")
        assert page.status_code == 200 and 'id="box-down"' in page.get_data(as_text=True)
        token = csrf_from(c.get("/mydata/").get_data(as_text=True))
        r = c.put("/api/v1/rules", json={"rules": {}}, headers={"X-CSRFToken": token})
        assert r.status_code in (400, 503), r.status_code
        assert [op for op in box.calls if op != "phone_session"] == [], box.calls
    finally:
        box.stop.set()
