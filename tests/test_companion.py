"""The companion app through Flask's test client, against a real box daemon (real broker, real
store): the gate (unpaired, CSRF, Host), pairing and lockout, unpairing, headers, bad input, the
daemon being down, and the OpenAPI document against the routes."""
from __future__ import annotations

import json
import os
import stat
import threading

import pytest
from openapi_spec_validator import validate

from companion_app import auth, create_app, security
from companion_app.api import ENDPOINTS
from companion_app.box import Box
from companion_app.dashboard import group_offers
from companion_app.intents import parse_form, wire_preview
from companion_app.openapi import document
from companion_app.rules import check as check_rules
from companion_app.rules import field_for
from companion_app.throttle import FREE_TRIES, Throttle, backoff_s
from processes import vrmbox, wait_for
from test_companion_helpers import (api_token, csrf_from, make_app, new_code, page_token, pair, rules_form,
                                   running_box)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]   # a real daemon and broker
CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    with running_box(tmp_path_factory.mktemp("companion")) as b:
        yield b


@pytest.fixture(autouse=True)
def forget_phones(request):
    """Each test starts with no paired phones (the box allows at most pairing.MAX_PHONES)."""
    yield
    if "box" in request.fixturenames:
        b = Box(request.getfixturevalue("box")["socket"])
        for p in b.call("phones"):
            b.call("phone_unpair", {"phone": p["phone"]})


@pytest.fixture
def app(box):
    return make_app(box["socket"])


@pytest.fixture
def client(app, box):
    c = app.test_client()
    pair(c, box["data"])
    return c


def routes(app):
    """(endpoint, method, url) for every route but static files, with placeholder ids."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<{arg}>", "ph-000000000000" if arg in ("phone", "phone_id") else "abc")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


def snapshot(box) -> dict:
    b = Box(box["socket"])
    return {op: b.call(op, args) for op, args in (("intents", {}), ("agreements", {}), ("rules", {}),
                                                   ("phones", {}), ("vendors", {}),
                                                   ("offers", {"all": True}))}


# ------------------------------------------------------------------------------ the gate
def test_every_route_but_pairing_refuses_an_unpaired_client(app):
    c = app.test_client()
    checked = 0
    for endpoint, method, url in routes(app):
        if endpoint in auth.PUBLIC:
            continue
        r = c.open(url, method=method, json={} if url.startswith("/api/") else None)
        if url.startswith("/api/"):
            assert r.status_code == 401, (method, url, r.status_code)
            assert r.get_json()["code"] == "not_paired"
        else:
            assert r.status_code == 302 and r.headers["Location"] == "/pair", (method, url, r.status_code)
        checked += 1
    assert checked > 50


def test_pairing_page_and_static_are_open(app):
    c = app.test_client()
    assert c.get("/pair").status_code == 200
    assert c.get("/static/app.css").status_code == 200
    assert c.get("/api/v1/session").get_json()["paired"] is False


def test_every_change_without_csrf_is_refused_and_changes_nothing(client, box):
    app = client.application
    before = snapshot(box)
    n = 0
    for endpoint, method, url in routes(app):
        if method not in CHANGING or endpoint in ("auth.pair", "api.pair"):
            continue
        body = {"json": {"category": "bikes", "value": "x", "rules": {}, "status": "blocked"}} \
            if url.startswith("/api/") else {"data": {"category": "bikes", "word": "ERASE", "value": "on"}}
        r = client.open(url, method=method, **body)
        assert r.status_code == 400, (method, url, r.status_code)
        assert "CSRF" in r.get_data(as_text=True), url
        n += 1
    assert n > 30
    assert snapshot(box) == before
    assert client.get("/").status_code == 200       # still paired


def test_pairing_itself_needs_csrf(app, box):
    c = app.test_client()
    c.get("/pair")
    r = c.post("/pair", data={"code": new_code(box["data"]), "name": "x"})
    assert r.status_code == 400
    assert c.get("/").status_code == 302
    r = c.post("/api/v1/pair", json={"code": new_code(box["data"])})
    assert r.status_code == 400 and r.get_json()["code"] == "csrf"


def test_cross_origin_post_refused(client):
    token = page_token(client)
    r = client.post("/settings/companion-only", data={"csrf_token": token, "value": "on"},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


@pytest.mark.parametrize("host", ["evil.example", "vrmbox.local.evil.example", "10.9.9.9:8080", ""])
def test_wrong_host_refused(app, host):
    r = app.test_client().get("/pair", headers={"Host": host})
    assert r.status_code == 400
    assert app.test_client().get("/api/v1/session", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080"])
def test_box_names_served(app, host):
    assert app.test_client().get("/pair", headers={"Host": host}).status_code == 200


def test_host_of():
    assert security.host_of("[::1]:80") == "::1"
    assert security.host_of("Box.Local:8080") == "box.local"
    assert security.host_of("::1") == "::1"


# ------------------------------------------------------------------------------ pairing
def test_pair_sets_a_strict_http_only_cookie(app, box):
    c = app.test_client()
    token = csrf_from(c.get("/pair").get_data(as_text=True))
    r = c.post("/pair", data={"code": new_code(box["data"]), "name": "Ann", "csrf_token": token})
    assert r.status_code == 302
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("vrmbox=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/").status_code == 200
    assert c.get("/pair").status_code == 302          # already paired


def test_https_cookie_is_secure_and_host_prefixed(box):
    app = make_app(box["socket"], HTTPS=True)
    c = app.test_client()
    token = csrf_from(c.get("/pair", base_url="https://localhost").get_data(as_text=True))
    r = c.post("/pair", base_url="https://localhost",
               data={"code": new_code(box["data"]), "name": "Ann", "csrf_token": token})
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("__Host-vrmbox=") and "Secure" in cookie and "Path=/" in cookie
    assert "Strict-Transport-Security" in r.headers


def test_pair_through_the_api(app, box):
    c = app.test_client()
    token = api_token(c)
    r = c.post("/api/v1/pair", json={"code": new_code(box["data"]), "name": "api phone"},
               headers={"X-CSRFToken": token})
    assert r.status_code == 200 and r.get_json()["name"] == "api phone"
    s = c.get("/api/v1/session").get_json()
    assert s["paired"] is True and s["phone"]["name"] == "api phone"
    assert any(p["name"] == "api phone" for p in c.get("/api/v1/phones").get_json())


def test_a_code_works_once(app, box):
    code = new_code(box["data"])
    a, b = app.test_client(), app.test_client()
    for c in (a, b):
        c.get("/pair")
    r1 = a.post("/pair", data={"code": code, "name": "a", "csrf_token": csrf_from(a.get("/pair").get_data(as_text=True))})
    r2 = b.post("/pair", data={"code": code, "name": "b", "csrf_token": csrf_from(b.get("/pair").get_data(as_text=True))})
    assert r1.status_code == 302
    assert r2.status_code == 400 and "no pairing code" in r2.get_data(as_text=True)


def test_wrong_codes_lock_out_the_client_not_the_owner(tmp_path):
    with running_box(tmp_path, with_profile=False) as b:
        app = make_app(b["socket"])
        code = new_code(b["data"])
        bad = code[:-1] + str((int(code[-1]) + 1) % 10)

        def attempt(ip: str, value: str):
            c = app.test_client()
            c.environ_base["REMOTE_ADDR"] = ip
            token = csrf_from(c.get("/pair").get_data(as_text=True))
            return c.post("/pair", data={"code": value, "name": "x", "csrf_token": token})

        statuses = [attempt("10.0.0.1", bad).status_code for _ in range(FREE_TRIES)]
        assert statuses == [400] * (FREE_TRIES - 1) + [429]
        r = attempt("10.0.0.1", code)                  # locked for this client, even with the code
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        api = app.test_client()
        api.environ_base["REMOTE_ADDR"] = "10.0.0.1"
        r = api.post("/api/v1/pair", json={"code": code}, headers={"X-CSRFToken": api_token(api)})
        assert r.status_code == 429 and r.get_json()["code"] == "locked" and r.headers["Retry-After"]
        # the box counts per client and per code: wrong codes from elsewhere stop no one else
        assert [attempt("10.0.0.2", bad).status_code for _ in range(2)] == [400, 400]
        assert attempt("10.0.0.3", code).status_code == 302
        assert len(Box(b["socket"]).call("phones")) == 1
        audit = json.loads(vrmbox("audit", "show", "--json", "--limit", "100", data_dir=b["data"]).stdout)
        assert sum(e["event_type"] == "pairing_failed" for e in audit["entries"]) == FREE_TRIES + 2


def test_throttle_backoff():
    t = [0.0]
    th = Throttle(clock=lambda: t[0])
    waits = [th.failed("a") for _ in range(FREE_TRIES + 2)]
    assert waits == [0] * (FREE_TRIES - 1) + [backoff_s(FREE_TRIES), backoff_s(FREE_TRIES + 1),
                                              backoff_s(FREE_TRIES + 2)]
    assert waits[-1] == 4 * waits[-3]
    assert th.retry_after("a") == waits[-1] and th.retry_after("b") == 0
    t[0] += waits[-1]
    assert th.retry_after("a") == 0
    th.succeeded("a")
    assert th.failed("a") == 0


# ------------------------------------------------------------------------------ unpairing
def test_unpairing_another_phone_kills_its_session_at_once(app, box):
    a, b = app.test_client(), app.test_client()
    pair(a, box["data"], "phone A")
    pair(b, box["data"], "phone B")
    b_id = b.get("/api/v1/session").get_json()["phone"]["phone"]
    r = a.post(f"/settings/phones/{b_id}/unpair", data={"csrf_token": page_token(a)})
    assert r.status_code == 302
    assert b.get("/").status_code == 302
    assert b.get("/api/v1/intents").status_code == 401
    assert a.get("/").status_code == 200


def test_unpairing_from_the_box_kills_the_session(app, box):
    c = app.test_client()
    pair(c, box["data"], "to be unpaired")
    me = c.get("/api/v1/session").get_json()["phone"]["phone"]
    vrmbox("phones", "unpair", me, data_dir=box["data"])
    # the app caches a session check for at most SESSION_CACHE_S
    wait_for(lambda: c.get("/").status_code == 302, timeout=5 * security.SESSION_CACHE_S + 2,
             what="session ended")
    assert c.get("/api/v1/status").status_code == 401


def test_unpair_self(client):
    r = client.post("/unpair", data={"csrf_token": page_token(client)})
    assert r.status_code == 302 and r.headers["Location"] == "/pair"
    assert client.get("/").status_code == 302


def test_unpair_through_the_api(client):
    me = client.get("/api/v1/session").get_json()["phone"]["phone"]
    r = client.delete(f"/api/v1/phones/{me}", headers={"X-CSRFToken": api_token(client)})
    assert r.status_code == 200 and r.get_json()["unpaired"] is True
    assert client.get("/api/v1/intents").status_code == 401


# ------------------------------------------------------------------------------ headers
def test_security_headers_on_every_response(client):
    for path in ("/", "/pair", "/intents/", "/api/v1/intents", "/api/v1/openapi.json", "/nope"):
        r = client.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/static/app.css").headers.get("Cache-Control", "")


def test_no_inline_script_in_any_page(client):
    for path in ("/", "/intents/", "/agreements/", "/rules/", "/vendors/", "/mydata/", "/audit/",
                 "/settings/", "/pair"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>" not in html and " on" + "click=" not in html and "style=" not in html, path


# ------------------------------------------------------------------------------ pages and bad input
def test_intent_preview_then_cast(client, box):
    token = page_token(client, "/intents/")
    form = {"csrf_token": token, "category": "tents", "description": "for two",
            "attr_name_0": "people", "attr_value_0": "2", "attr_reveal_0": "1",
            "attr_name_1": "postcode_district", "attr_value_1": "N1",     # not ticked: stays home
            "ttl_days": "7"}
    r = client.post("/intents/preview", data=form)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "people" in page and "N1" not in page.split('id="wire"')[1].split("</pre>")[0]
    r = client.post("/intents/", data=form)
    assert r.status_code == 302
    mine = [i for i in Box(box["socket"]).call("intents") if i["description"] == "for two"]
    assert len(mine) == 1 and mine[0]["attributes"] == {"people": 2}
    assert "for two" in client.get("/").get_data(as_text=True)
    # withdraw
    r = client.post(f"/intents/{mine[0]['intent']}/withdraw", data={"csrf_token": token})
    assert r.status_code == 302
    assert [i["status"] for i in Box(box["socket"]).call("intents") if i["intent"] == mine[0]["intent"]] == ["withdrawn"]


@pytest.mark.parametrize("form,field", [
    ({"category": "Bikes!"}, "category"),
    ({"category": "bikes", "attr_name_0": "Budget Max", "attr_value_0": "1", "attr_reveal_0": "1"}, "attr_name_0"),
    ({"category": "bikes", "attr_name_0": "budget_max", "attr_reveal_0": "1"}, "attr_value_0"),
    ({"category": "bikes", "ttl_days": "9999"}, "ttl_days"),
    ({"category": "bikes", "description": "x" * 501}, "description"),
])
def test_bad_intent_shows_the_message_next_to_the_field(client, box, form, field):
    before = snapshot(box)
    token = page_token(client, "/intents/")
    r = client.post("/intents/", data={"csrf_token": token, "ttl_days": "7", **form})
    assert r.status_code == 400
    assert f'id="{field}-error"' in r.get_data(as_text=True)
    assert snapshot(box) == before


def test_intent_the_box_refuses_is_reported(client, box):
    before = snapshot(box)
    r = client.post("/api/v1/intents", json={"category": "bikes", "ttl": 59},
                    headers={"X-CSRFToken": api_token(client)})
    assert r.status_code == 400 and "ttl" in r.get_json()["error"]
    assert snapshot(box) == before


@pytest.mark.parametrize("form,field", [
    ({"max_price_amount": "eight hundred"}, "max_price_amount"),
    ({"currencies": "EURO"}, "currencies"),
    ({"w_price": "heavy"}, "w_price"),
    ({"attr_filters": "{not json"}, "attr_filters"),
    ({"vendors_allow": "acme", "vendors_block": "acme"}, None),
])
def test_bad_rules_refused_with_a_message(client, box, form, field):
    before = snapshot(box)
    r = client.post("/rules/", data={"csrf_token": page_token(client, "/rules/"), **form})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert 'class="field-error"' in page
    if field:
        assert f'id="{field}-error"' in page
    assert snapshot(box) == before


def test_rules_round_trip(client, box):
    r = client.post("/rules/", data={"csrf_token": page_token(client, "/rules/"), **rules_form(
        max_price_amount="800", max_price_currency="EUR", require_terms_accepted=["off", "on"],
        w_price="1", w_delivery="0.5", brands_liked="Brompton")})
    assert r.status_code == 302
    rules = Box(box["socket"]).call("rules")
    assert rules["filters"]["max_price"] == {"amount": 800.0, "currency": "EUR"}
    assert rules["weights"]["delivery"] == 0.5 and rules["brands"]["liked"] == ["Brompton"]
    page = client.get("/rules/").get_data(as_text=True)
    assert 'value="800"' in page and 'value="Brompton"' in page


def test_rules_pure_helpers():
    rules, errors = check_rules({"w_price": "1", "regions": "gb, GB-LND"})
    assert errors == {} and rules["filters"]["regions"] == ["GB", "GB-LND"]
    assert field_for("filters.currencies[1]") == "currencies"
    assert field_for("weights.price") == "w_price"
    assert field_for("weights.attributes[0].prefer") == "attr_weights"
    assert field_for("") == "_form"


def test_intent_pure_helpers():
    intent, errors = parse_form({"category": "bikes", "attr_name_0": "budget_max", "attr_value_0": "800",
                                 "attr_reveal_0": "1", "attr_name_1": "green", "attr_value_1": "true",
                                 "attr_reveal_1": "1", "attr_name_2": "size", "attr_value_2": "L", "attr_reveal_2": "1",
                                 "attr_name_3": "secret", "attr_value_3": "stays home",
                                 "ttl_days": "30"})
    assert errors == {}
    assert intent["attributes"] == {"budget_max": 800, "green": True, "size": "L"}
    assert intent["ttl"] == 30 * 86400
    assert json.loads(wire_preview(intent)) == {"category": "bikes", "attributes": intent["attributes"]}


def test_group_offers_keeps_rank_order():
    intents = [{"intent": "a", "created_at": 1}, {"intent": "b", "created_at": 2}]
    offers = [{"intent": "a", "offer": str(i)} for i in range(12)] + [{"intent": "b", "offer": "x"}]
    groups = group_offers(intents, offers, top=10)
    assert [g["intent"] for g in groups] == ["b", "a"]
    assert [o["offer"] for o in groups[1]["ranked"]] == [str(i) for i in range(10)] and groups[1]["more"] == 2


def test_accept_needs_fields(client, box):
    r = client.post("/offers/no-such-offer/accept", data={"csrf_token": page_token(client)})
    assert r.status_code == 404


def test_upload_too_large(client):
    r = client.post("/mydata/claims", data={"csrf_token": page_token(client), "token": "x" * 300_000})
    assert r.status_code == 413


def test_snooze_choice_checked(client):
    r = client.post("/offers/abc/snooze", data={"csrf_token": page_token(client), "seconds": "5"})
    assert r.status_code == 400


def test_erase_needs_the_typed_word(client, box):
    before = snapshot(box)
    r = client.post("/settings/erase", data={"csrf_token": page_token(client), "word": "erase"})
    assert r.status_code == 400 and 'id="word-error"' in r.get_data(as_text=True)
    assert snapshot(box) == before


def test_api_bad_input_is_a_clear_400(client, box):
    token = api_token(client)
    before = snapshot(box)
    for method, url, body in (("POST", "/api/v1/intents", {"category": 5}),
                              ("POST", "/api/v1/intents", {"category": "bikes", "evil": 1}),
                              ("POST", "/api/v1/offers/abc/accept", {"fields": []}),
                              ("PUT", "/api/v1/vendors/acme/status", {"status": "owned"}),
                              ("PUT", "/api/v1/rules", {"rules": {"version": 2}}),
                              ("POST", "/api/v1/intents/%2e%2e/withdraw", None)):
        r = client.open(url, method=method, json=body, headers={"X-CSRFToken": token})
        assert r.status_code in (400, 404), (url, r.status_code)
        assert r.get_json()["error"]
    r = client.post("/api/v1/intents", data="not json", content_type="application/json",
                    headers={"X-CSRFToken": token})
    assert r.status_code == 400
    assert snapshot(box) == before


def test_vendor_status_refused_for_unknown_vendor(client):
    r = client.post("/vendors/nobody/status", data={"csrf_token": page_token(client), "status": "blocked"})
    assert r.status_code == 302
    assert "Not done" in client.get("/vendors/").get_data(as_text=True)


def test_audit_page_pages_and_filters(client):
    assert client.get("/audit/?type=phone_paired").status_code == 200
    assert client.get("/audit/?type=Bad Type").status_code == 400
    assert client.get("/audit/?page=0").status_code == 400


def test_events_stream_carries_the_daemons_events(app, box):
    c = app.test_client()
    pair(c, box["data"])
    r = c.get("/events", buffered=False)
    assert r.mimetype == "text/event-stream"
    chunks = iter(r.response)
    assert b"event: hello" in next(chunks)
    done = threading.Event()

    def cast() -> None:
        Box(box["socket"]).call("intent_add", {"category": "bikes", "description": "sse"})
        done.set()
    threading.Thread(target=cast, daemon=True).start()
    got = b""
    for chunk in chunks:           # the daemon's "changed" event for intent_add
        got += chunk
        if b"event: changed" in got:
            break
    r.close()
    assert done.wait(10) and b'"op": "intent_add"' in got


# ------------------------------------------------------------------------------ daemon down
def test_pages_render_with_a_banner_when_the_daemon_is_down(tmp_path):
    app = create_app({"BOX": Box(tmp_path / "no.sock"), "SECRET_KEY": "t" * 64, "TESTING": True})
    c = app.test_client()
    assert "the box daemon is not running" in c.get("/pair").get_data(as_text=True).lower()
    assert c.get("/").status_code == 302                # no cookie: pairing
    with c.session_transaction() as s:
        s[security.SESSION_KEY] = "a-secret-from-before"
    for path in ("/", "/intents/", "/agreements/", "/settings/", "/mydata/", "/audit/", "/vendors/"):
        r = c.get(path)
        assert r.status_code == 200 and 'id="box-down"' in r.get_data(as_text=True), path
    r = c.post("/intents/", data={"csrf_token": page_token(c, "/intents/"), "category": "bikes", "description": "",
                                  "ttl_days": "7"}, follow_redirects=True)
    assert "Not done: the box daemon is not running" in r.get_data(as_text=True)
    r = c.get("/api/v1/intents")
    assert r.status_code == 503 and r.get_json()["code"] == "box_down"


# ------------------------------------------------------------------------------ secrets
def test_secret_key_generated_0600_once(tmp_path):
    k1 = security.load_secret_key(tmp_path)
    path = security.secret_path(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(k1) >= 64
    assert security.load_secret_key(tmp_path) == k1
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="fewer than 32 bytes"):
        security.load_secret_key(tmp_path)


def test_app_reads_its_key_from_the_data_dir(tmp_path):
    app = create_app({"BOX": Box(tmp_path / "no.sock"), "DATA_DIR": tmp_path})
    assert app.config["SECRET_KEY"] == security.load_secret_key(tmp_path)


# ------------------------------------------------------------------------------ OpenAPI
def test_openapi_document_validates(app):
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_every_api_route_is_documented_and_every_documented_route_exists(app):
    documented = {(m.upper(), "/api/v1" + p) for p, ops in document()["paths"].items() for m in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<{arg}>", "{" + arg + "}")
            served |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented
    assert len(ENDPOINTS) + 3 == len({p for _, p in documented}) or len(served) >= len(ENDPOINTS)


# ------------------------------------------------------------------------------ held for the button
def test_companion_only_waits_for_the_box_then_the_phone_may_confirm(client, box):
    r = client.post("/settings/companion-only", data={"csrf_token": page_token(client), "value": "on"},
                    follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Waiting for the box: press and hold the button on the box" in page
    assert 'id="companion-only">off<' in page                      # nothing changed yet
    r = client.put("/api/v1/settings/companion-only-confirmation", json={"value": True},
                   headers={"X-CSRFToken": api_token(client)})
    assert r.status_code == 202 and r.get_json()["status"] == "waiting_for_button"
    vrmbox("approve", r.get_json()["request"], data_dir=box["data"])   # the long press
    assert 'id="companion-only">on<' in client.get("/settings/").get_data(as_text=True)
    r = client.post("/settings/companion-only", data={"csrf_token": page_token(client), "value": "off"},
                    follow_redirects=True)
    assert 'id="companion-only">off<' in r.get_data(as_text=True)   # turning it off is not held


# ------------------------------------------------------------------ text safety, against the real daemon
# (tests/test_companion_textsafe.py has the full matrix, in the fast lane, against a fake box)
def test_a_nul_in_an_email_value_is_refused_next_to_the_field(client, box):
    before = Box(box["socket"]).call("profile")
    r = client.post("/mydata/profile", data={"csrf_token": page_token(client, "/mydata/"), "name": "email",
                                             "value": "ann@example.org\x00evil"})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="value-error"' in page and "&lt;U+0000&gt;" in page
    r = client.put("/api/v1/profile/email", json={"value": "ann@example.org\x00"},
                   headers={"X-CSRFToken": api_token(client)})
    assert r.status_code == 400 and r.get_json()["field"] == "value"
    assert Box(box["socket"]).call("profile") == before


def test_an_empty_rules_post_changes_nothing_and_says_what_is_missing(client, box):
    before = snapshot(box)
    r = client.post("/rules/", data={"csrf_token": page_token(client, "/rules/")})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "missing from the form" in page and "w_price" in page
    assert snapshot(box) == before


@pytest.mark.parametrize("nxt", ["/\t/evil.example", "/\n/evil.example", "//evil.example", "/\\evil.example"])
def test_next_never_leaves_the_site_nor_fails_after_a_change(client, box, nxt):
    before = snapshot(box)
    r = client.post("/offers/abc/decline", data={"csrf_token": page_token(client), "next": nxt})
    assert r.status_code in (302, 400), r.status_code
    assert "evil" not in r.headers.get("Location", "")
    assert snapshot(box) == before


def test_origin_on_another_port_or_scheme_is_refused(client, box):
    before = snapshot(box)
    for origin in ("http://localhost:8081", "https://localhost"):
        r = client.post("/settings/companion-only", data={"csrf_token": page_token(client), "value": "on"},
                        headers={"Origin": origin})
        assert r.status_code == 403, origin
    assert snapshot(box) == before
