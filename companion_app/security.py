"""What keeps the companion app from being the weak door into the box.

* Host check (DNS-rebinding defence): only the box's own names and addresses are served.
* Security headers on every response: strict CSP without inline script, no framing, no
  sniffing, no referrer, and no caching of anything but static files.
* Sessions (`BoxSessions`): the session cookie holds one opaque random id and nothing else; the
  box keeps its SHA-256 and which phone it is (device/pairing.py), so a phone stays paired across
  restarts of this app and a copy of the cookie is worth nothing once the phone is unpaired. Every
  request's id is checked with the daemon (`phone_session`), cached for at most SESSION_CACHE_S.
  The cookie is written only by pairing and deleted only by unpairing, never by a GET.
* CSRF tokens are derived from what the browser already holds (HMAC with SECRET_KEY): a paired
  session's from its id, the pairing form's from a separate pairing cookie, so a visit to /pair
  (a cross-site link arrives without the SameSite=Strict session cookie) cannot replace a session.
* CSRF: Flask-WTF's token on every state-changing request; the API sends it in `X-CSRFToken`;
  a foreign Origin (scheme, host and port compared: `same_origin`) is refused before it.
* SECRET_KEY from the box's secrets file, generated (0600) on first run, never from code.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from flask import Flask, Request, Response, g, has_app_context, request, session
from flask.sessions import SessionInterface, SessionMixin

from vrm_io.files import write_private_file

from .box import Box, BoxDown, BoxRefused

log = logging.getLogger(__name__)

# Provisioning writes <config dir>/secrets/companion_secret (provisioning/layout.py); without it
# (a development box) the app makes one under <data_dir>/secrets/ on first run.
SECRET_FILE = Path("secrets") / "companion_secret"
SESSION_CACHE_S = 1.0
SESSION_KEY = "session_id"            # the one value of a session the cookie carries
SESSION_TTL_S = 365 * 86400           # the cookie's life; the box ends the session then too
CSRF_KEY = "csrf_token"               # Flask-WTF's raw token in the session (derived, never stored)
FLASHES_KEY = "_flashes"
# what a browser may present as a session id or pairing nonce (token_urlsafe output and the like)
_OPAQUE = re.compile(r"^[A-Za-z0-9_-]{16,256}\Z")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def secret_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / SECRET_FILE


def read_secret(path: Path) -> bytes:
    """An existing secret file; refused when too short, warned about when others may read it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); it should be 0600", path, mode)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds fewer than 32 bytes: delete it to make a new one")
    return key


def load_secret_key(data_dir: Path | str) -> bytes:
    """The app's signing key: read it, or make it (0600, in a 0700 folder) the first time."""
    path = secret_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return read_secret(path)
    key = secrets.token_hex(32).encode()
    try:
        # synced and linked into place whole: a power cut never leaves an empty secret, and
        # two first starts racing agree on one key
        write_private_file(path, key + b"\n", exclusive=True)
    except FileExistsError:
        return read_secret(path)
    log.info("made a new companion secret in %s", path)
    return key


def box_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names the box answers to (without port), lower-case."""
    host = socket.gethostname().lower()
    names = {"localhost", "127.0.0.1", "::1", host, f"{host}.local", "vrmbox.local"}
    names.update(n.lower() for n in extra if n)
    return frozenset(names)


def host_of(header: str) -> str:
    """'[::1]:8080' -> '::1', 'box.local:80' -> 'box.local' (no validation beyond that)."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.index("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, the port filled in from the scheme; None when
    it is not an http(s) origin with a host and a valid port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether a request's Origin header is this app's own origin: scheme, host AND port the
    same as the request's (a page on another port of the box is another site)."""
    mine = origin_of(f"{scheme}://{host}")
    return mine is not None and origin_of(origin) == mine


class Sessions:
    """Which phone a session id belongs to, asked of the daemon (cached very briefly)."""

    def __init__(self, box: Box, cache_s: float = SESSION_CACHE_S) -> None:
        self.box = box
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def phone(self, secret: str, fresh: bool = False,
              timeout: float | None = None) -> dict[str, Any] | None:
        """The phone, or None when the id is not (or no longer) paired. BoxDown passes up (BoxSlow
        when `timeout` ran out first). `fresh`: ask the box even when a cached answer is young."""
        key, now = self._key(secret), time.monotonic()
        if not fresh:
            with self._lock:
                hit = self._cache.get(key)
            if hit and hit[0] > now:
                return hit[1]
        try:
            if timeout is None:
                phone: dict[str, Any] | None = self.box.call("phone_session", {"secret": secret})
            else:
                phone = self.box.call("phone_session", {"secret": secret}, timeout=timeout)
        except BoxRefused:
            phone = None
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = (now + self.cache_s, phone)
        return phone

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


class Flashes:
    """Messages waiting for a browser's next page ("Snoozed for 1 hour."), kept in this process's
    memory: they are not worth a cookie (the cookie carries nothing but the session id) nor a
    trip to the box, and losing one to a restart costs only the message."""

    TTL_S = 600.0
    MAX = 1000

    def __init__(self) -> None:
        self._held: dict[str, tuple[float, list[Any]]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> list[Any]:
        with self._lock:
            hit = self._held.pop(key, None)
        return list(hit[1]) if hit and hit[0] > time.monotonic() else []

    def put(self, key: str, messages: list[Any]) -> None:
        with self._lock:
            if not messages:
                self._held.pop(key, None)
                return
            now = time.monotonic()
            if len(self._held) >= self.MAX:
                self._held = {k: v for k, v in self._held.items() if v[0] > now}
                if len(self._held) >= self.MAX:
                    self._held.clear()
            self._held[key] = (now + self.TTL_S, list(messages))


def derive_csrf(secret_key: str | bytes, scope: str, value: str) -> str:
    """A raw CSRF token for Flask-WTF, computed from what the browser presents (its session id,
    or its pairing nonce) with the app's key: the same after a restart, nothing to store."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(key, f"vrmbox-csrf:{scope}:{value}".encode(), hashlib.sha256).hexdigest()


class BoxSession(dict, SessionMixin):  # type: ignore[type-arg]
    """One request's session. Of everything in it only SESSION_KEY (the opaque id) goes to the
    browser, in the session cookie; the CSRF token is derived (`use_csrf`); flashes wait in
    `Flashes`, loaded only when a page asks for them, so a request that shows none (a
    stylesheet, the event stream) cannot take or put back another page's messages."""

    def __init__(self, sid: str | None, nonce: str | None, flashes: Flashes) -> None:
        super().__init__()
        if sid is not None:
            self[SESSION_KEY] = sid
        self.sid = sid                    # as the browser sent it
        self.nonce = nonce                # its pairing cookie's value, if any
        self.new_nonce = False            # made in this request: the pairing cookie is to be set
        self._flashes = flashes
        self._loaded = False

    def _flash_key(self) -> str | None:
        sid = dict.get(self, SESSION_KEY)
        if isinstance(sid, str):
            return "s:" + hashlib.sha256(sid.encode()).hexdigest()
        return "n:" + self.nonce if self.nonce else None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            key = self._flash_key()
            held = self._flashes.take(key) if key else []
            if held:
                dict.__setitem__(self, FLASHES_KEY, held)

    def __contains__(self, key: object) -> bool:
        if key == FLASHES_KEY:
            self._load()
        return dict.__contains__(self, key)

    def __getitem__(self, key: str) -> Any:
        if key == FLASHES_KEY:
            self._load()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if key == FLASHES_KEY:
            self._load()
        return dict.get(self, key, default)

    def pop(self, key: str, *default: Any) -> Any:
        if key == FLASHES_KEY:
            self._load()
        return dict.pop(self, key, *default)

    def __setitem__(self, key: str, value: Any) -> None:
        if key == FLASHES_KEY:
            self._load()
        dict.__setitem__(self, key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key == FLASHES_KEY:
            self._load()
        return dict.setdefault(self, key, default)

    def save_flashes(self) -> None:
        key = self._flash_key()
        if self._loaded and key:
            self._flashes.put(key, list(dict.get(self, FLASHES_KEY) or []))


def pairing_cookie_name(app: Flask) -> str:
    return app.config["SESSION_COOKIE_NAME"] + "-pair"


class BoxSessions(SessionInterface):
    """Sessions whose state is on the box: the cookie is an opaque random id (made by the box at
    pairing, `pair_complete`), the box holds its hash and the phone it belongs to."""

    def __init__(self) -> None:
        self.flashes = Flashes()

    @staticmethod
    def _opaque(value: str | None) -> str | None:
        return value if isinstance(value, str) and _OPAQUE.match(value) else None

    def open_session(self, app: Flask, request: Request) -> BoxSession:
        sid = self._opaque(request.cookies.get(app.config["SESSION_COOKIE_NAME"]))
        nonce = self._opaque(request.cookies.get(pairing_cookie_name(app)))
        return BoxSession(sid, nonce, self.flashes)

    def _cookie(self, app: Flask) -> dict[str, Any]:
        return {"path": "/", "secure": bool(app.config["SESSION_COOKIE_SECURE"]), "httponly": True,
                "samesite": "Strict"}

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, BoxSession)
        name = app.config["SESSION_COOKIE_NAME"]
        sid = dict.get(session, SESSION_KEY)
        if sid != session.sid:
            if isinstance(sid, str):          # just paired (the only place that sets one)
                response.set_cookie(name, sid, max_age=SESSION_TTL_S, **self._cookie(app))
            else:                             # unpaired: the cookie goes with the session
                response.delete_cookie(name, **self._cookie(app))
        # the pairing nonce is handed out only when a page actually carries a token made from it
        if session.new_nonce and session.nonce and has_app_context() and CSRF_KEY in g:
            response.set_cookie(pairing_cookie_name(app), session.nonce, **self._cookie(app))
        session.save_flashes()


def use_csrf(app: Flask, paired: bool) -> None:
    """Put this request's raw CSRF token where Flask-WTF looks (session[CSRF_KEY]): a paired
    session's is derived from its id, anyone else's (the pairing form) from the pairing cookie,
    made here when the browser has none. Nothing of it is stored."""
    sess = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(sess, BoxSession)
    sid = dict.get(sess, SESSION_KEY)
    if paired and isinstance(sid, str):
        dict.__setitem__(sess, CSRF_KEY, derive_csrf(app.secret_key, "session", sid))
        return
    if not sess.nonce:
        sess.nonce, sess.new_nonce = secrets.token_urlsafe(24), True
    dict.__setitem__(sess, CSRF_KEY, derive_csrf(app.secret_key, "pair", sess.nonce))


def start_session(app: Flask, sid: str) -> None:
    """This browser has just paired: its cookie becomes `sid` (the box's answer to pairing), and
    the CSRF token of its pages from now on is the session's."""
    sess = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(sess, BoxSession)
    flashes = dict.get(sess, FLASHES_KEY)
    sess.clear()
    if flashes:
        dict.__setitem__(sess, FLASHES_KEY, flashes)
    sess[SESSION_KEY] = sid
    g.pop(CSRF_KEY, None)                 # Flask-WTF's per-request copy of the old token
    use_csrf(app, paired=True)


def install(app: Flask) -> None:
    """Host check first, headers last, on every request."""
    allowed: frozenset[str] = app.config["ALLOWED_HOSTS"]

    @app.before_request
    def check_host() -> Any:
        if host_of(request.host) not in allowed:
            log.warning("refused request for host %r from %s", request.host, request.remote_addr)
            return Response("unknown host\n", status=400, mimetype="text/plain")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        for k, v in HEADERS.items():
            resp.headers.setdefault(k, v)
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Pragma"] = "no-cache"
        if app.config.get("HTTPS"):
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        return resp


def current_phone(app: Flask) -> dict[str, Any] | None:
    """Set g.phone and g.box_down for this request; the phone or None."""
    if "phone" in g:
        return g.phone
    g.phone, g.box_down = None, False
    sid = session.get(SESSION_KEY)
    if isinstance(sid, str):
        try:
            g.phone = app.extensions["vrmbox_sessions"].phone(sid)
        except BoxDown:
            g.box_down = True
    return g.phone
