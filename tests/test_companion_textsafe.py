"""Text safety in the phone app, in the fast lane: the app against a fake box
that answers like the daemon and records every operation asked of it, so "nothing changed" means
"no changing operation was asked".

* bidi and invisible format characters in vendor text are shown as <U+202E> escapes on every
  page (device/textsafe.py, the one rule; its own tests and the CLI's and the demo's:
  tests/test_textsafe.py);
* `next=` is followed only when it is a strict same-origin path;
* the Origin check compares scheme, host and port;
* a control character in any form or API field is refused next to the field, nothing changed;
* a form post missing fields changes nothing and says which are missing.
"""
from __future__ import annotations

import copy
import unicodedata
from typing import Any

import pytest
from markupsafe import escape as html_escape

from companion_app import create_app, inputs, security
from companion_app.box import BoxDown, BoxRefused
from companion_app.pages import safe_next
from device import textsafe
from test_companion_helpers import csrf_from, rules_form
from test_textsafe import HIDDEN, ITEM, RLO, VENDOR_NAME

SECRET = "s" * 43
PHONE = {"phone": "ph-0123456789ab", "name": "test phone"}

READS = {"status", "intents", "offers", "agreements", "vendors", "rules", "presets", "settings",
         "profile", "stuff", "suppliers", "reviews", "claims", "phones", "audit", "audit_verify",
         "accept_preview", "rules_preview", "phone_session", "pending"}


def _offer(n: int, **kw: Any) -> dict[str, Any]:
    return {"offer": f"o{n}", "intent": "i1", "vendor": "acme", "item": ITEM, "price": 900.5,
            "currency": "EUR", "eligible": True, "score": 0.9, "status": "new",
            "explanation": {"contributions": {f"price{RLO}": 0.5}, "passed": [f"terms{RLO}"],
                            "failed": []}, **kw}


def answers() -> dict[str, Any]:
    """What the daemon would answer, with hostile text wherever a vendor writes it."""
    return {
        "status": {"connected": True},
        "intents": [{"intent": "i1", "category": "bikes", "description": "for town", "status": "active",
                     "offers": 2, "expires_at": 2_000_000_000, "created_at": 1_900_000_000,
                     "attributes": {"budget_max": 900}}],
        "offers": [_offer(1), _offer(2, vendor="beta", item=f"{RLO}Bike", currency=f"{RLO}EUR",
                                     eligible=False, explanation={"contributions": {}, "passed": [],
                                                                  "failed": [f"max_price{RLO}"]})],
        "agreements": [{"agreement": "a1", "vendor": "acme", "status": "active", "fields": ["email"],
                        "purpose": f"deliver{RLO}", "duration_days": 30, "created_at": 1_900_000_000},
                       {"agreement": "a2", "vendor": "acme", "status": "pending_confirmation",
                        "fields": ["email"], "purpose": "p", "duration_days": 30, "created_at": 1}],
        "vendors": [{"vendor": "acme", "name": VENDOR_NAME, "did": "did:key:z6Mk" + "a" * 44,
                     "status": "allowed", "key_changed": True, "pending_did": "did:key:z6Mk" + "b" * 44,
                     "rejections": {f"bad{RLO}": 2}}],
        "rules": {"version": 1, "filters": {"require_terms_accepted": True, "currencies": ["EUR"]},
                  "weights": {"price": 1.0, "delivery": 0.5}, "brands": {"liked": ["Brompton"], "disliked": []}},
        "presets": [{"name": "town bike", "category": "bikes"}],
        "settings": {"companion_only_confirmation": False},
        "profile": {"email": {"value": "ann@example.org", "provenance": "self"},
                    "loyalty": {"value": f"gold{RLO}", "provenance": "read-only", "source": f"acme{RLO}"}},
        "stuff": [{"id": "s1", "name": f"Bike{RLO}", "supplier": "acme"}],
        "suppliers": [{"vendor": "acme", "name": VENDOR_NAME, "notes": "", "agreements": []}],
        "reviews": [],
        "claims": [{"id": "c1", "issuer": f"did:key:z{RLO}", "types": [f"Age{RLO}Over18"]}],
        "phones": [PHONE],
        "audit": {"total": 1, "entries": [{"seq": 1, "event_type": "offer_stored", "created_at": 1,
                                           "data": {"item": ITEM}}]},
        "audit_verify": {"ok": True},
        "accept_preview": {"fields": ["email"], "purpose": f"deliver{RLO}", "duration_days": 30},
        "rules_preview": [_offer(1)],
    }


class FakeBox:
    """The Box interface (companion_app/box.py) over canned answers; records every call."""

    timeout = 5.0

    def __init__(self) -> None:
        self.answers = answers()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse: str | None = None

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        args = args or {}
        self.calls.append((op, args))
        if op == "phone_session":
            if args.get("secret") != SECRET:
                raise BoxRefused("not paired")
            return dict(PHONE)
        if op in READS:
            return copy.deepcopy(self.answers.get(op))
        if self.refuse:
            raise BoxRefused(self.refuse)
        if op == "pair_complete":
            return {"phone": PHONE["phone"], "name": args.get("name"), "secret": SECRET}
        return {"ok": True, "agreement": "a9"}

    def running(self) -> bool:
        return True

    def events(self, idle_s: float = 15.0) -> Any:
        raise BoxDown("no event stream in these tests")

    def changes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(op, args) for op, args in self.calls if op not in READS]


@pytest.fixture
def box() -> FakeBox:
    return FakeBox()


@pytest.fixture
def client(box: FakeBox) -> Any:
    app = create_app({"BOX": box, "SECRET_KEY": "t" * 64, "TESTING": True, "READ_CACHE_S": 0})
    c = app.test_client()
    with c.session_transaction() as s:
        s[security.SESSION_KEY] = SECRET
    return c


def token(client: Any, path: str = "/settings/") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def intent_form() -> dict[str, str]:
    return {"category": "bikes", "description": "for town", "ttl_days": "7",
            "attr_name_0": "budget_max", "attr_value_0": "800", "attr_reveal_0": "1",
            "attr_name_1": "frame_size", "attr_value_1": ""}


def assert_neutral(html: str, where: str = "") -> None:
    raw = sorted({f"U+{ord(c):04X}" for c in html if c in HIDDEN and c not in "\t\n\r"})
    assert not raw, (where, raw)


# ============================================================== the phone app: every page
PAGES = ("/", "/fragments/offers", "/intents/", "/intents/i1", "/offers/o1/accept", "/agreements/",
         "/agreements/fragment", "/vendors/", "/mydata/", "/audit/", "/settings/", "/rules/")


def test_no_page_carries_a_bidi_or_invisible_character(client):
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200, path
        assert_neutral(r.get_data(as_text=True), path)


def test_rlo_in_an_offer_reads_in_logical_order_next_to_its_price(client):
    html = client.get("/").get_data(as_text=True)
    assert "Invoice &lt;U+202E&gt;fdp.exe" in html            # the escape, not "exe.pdf"
    assert "900.50 EUR" in html and "&lt;U+202E&gt;EUR" not in html.split('data-offer="o1"')[1][:600]
    assert "&lt;U+202E&gt;" in client.get("/intents/i1").get_data(as_text=True)   # beta's currency


def test_vendor_refusals_and_rules_preview_are_neutral_too(client, box):
    box.refuse = f"vendor {RLO}emca is blocked"
    r = client.post("/offers/o1/decline", data={"csrf_token": token(client)}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Not done: vendor &lt;U+202E&gt;emca is blocked" in page
    assert_neutral(page)
    r = client.post("/rules/preview", data={"csrf_token": token(client, "/rules/"), **rules_form()})
    assert r.status_code == 200 and 'id="preview"' in r.get_data(as_text=True)
    assert_neutral(r.get_data(as_text=True))


def test_what_the_person_typed_goes_back_unchanged_in_the_form(client, box):
    """Form values are sent back as typed (|verbatim), not rewritten: a second submit sends the
    same text. A description with an RLM mark shows in the wire preview as an escape, and the
    hidden field that casts it carries the real character."""
    form = {**intent_form(), "description": "\u05e9\u05dc\u05d5\u05dd\u200f x"}
    r = client.post("/intents/preview", data={"csrf_token": token(client, "/intents/"), **form})
    page = r.get_data(as_text=True)
    wire = page.split('id="wire"')[1].split("</pre>")[0]
    assert "&lt;U+200F&gt;" in wire and "\u200f" not in wire
    assert 'name="description" value="\u05e9\u05dc\u05d5\u05dd\u200f x"' in page


# ============================================================== next=
@pytest.mark.parametrize("nxt", ["/\t/evil.example", "/\n/evil.example", "/\r\n/x", "//evil.example",
                                 "/\\evil.example", "https://evil.example/", "/ok path", "/a//b",
                                 "/%0a\u2028", "intents/", "/" + "a" * 400])
def test_next_off_site_or_malformed_goes_to_the_dashboard(client, box, nxt):
    r = client.post("/offers/o1/snooze", data={"csrf_token": token(client), "seconds": "3600", "next": nxt})
    if any(unicodedata.category(c) == "Cc" for c in nxt):
        assert r.status_code == 400 and not box.changes()              # refused before any change
        assert "control character" in r.get_data(as_text=True)
        return
    assert r.status_code == 302 and r.headers["Location"] == "/", nxt
    assert [op for op, _ in box.changes()] == ["offer_snooze"]


def test_next_same_site_path_is_followed(client, box):
    r = client.post("/offers/o1/decline", data={"csrf_token": token(client), "next": "/intents/i1?all=1"})
    assert r.status_code == 302 and r.headers["Location"] == "/intents/i1?all=1"


def test_safe_next_pattern():
    assert safe_next("/") == "/" and safe_next("/agreements/?highlight=a1") == "/agreements/?highlight=a1"
    for bad in ("", "/\t/x", "//x", "/\\x", "/a//b", "x", "/é", "/a b", "/#x", None, 5):
        assert safe_next(bad) is None, bad


# ============================================================== Origin: scheme, host and port
@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost", True), ("http://localhost:80", True), ("http://LOCALHOST", True),
    ("http://localhost:8081", False), ("https://localhost", False), ("http://localhost:443", False),
    ("http://evil.example", False), ("http://localhost:notaport", False), ("file://", False),
])
def test_origin_must_match_scheme_host_and_port(client, box, origin, allowed):
    r = client.post("/settings/companion-only", data={"csrf_token": token(client), "value": "off"},
                    headers={"Origin": origin})
    if allowed:
        assert r.status_code == 302 and box.changes(), origin
    else:
        assert r.status_code == 403 and not box.changes(), origin


def test_same_origin_helper():
    assert security.same_origin("https://box.local:8443", "https", "box.local:8443")
    assert not security.same_origin("https://box.local:8444", "https", "box.local:8443")
    assert not security.same_origin("http://box.local:8443", "https", "box.local:8443")
    assert security.same_origin("http://[::1]:8080", "http", "[::1]:8080")
    assert not security.same_origin("http://[::1]:8081", "http", "[::1]:8080")
    assert security.origin_of("https://box.local") == ("https", "box.local", 443)


# ============================================================== every form: controls and missing fields
# (url, a complete form as the page sends it, the changing op it asks, where a field's error shows:
#  "id" next to the field, "page" on an error page)
FORMS = [
    ("/offers/o1/accept", {"fields": "email", "purpose": "deliver", "duration_days": "30"}, "offer_accept", "id"),
    ("/offers/o1/decline", {}, "offer_decline", "page"),
    ("/offers/o1/snooze", {"seconds": "86400"}, "offer_snooze", "page"),
    ("/intents/", intent_form(), "intent_add", "id"),
    ("/intents/preset", {"name": "town bike"}, "intent_preset", "page"),
    ("/intents/i1/withdraw", {}, "intent_withdraw", "page"),
    ("/rules/", rules_form(), "rules_set", "id"),
    ("/vendors/acme/status", {"status": "blocked"}, "vendor_status", "page"),
    ("/vendors/acme/accept-key", {"did": "did:key:z6Mk" + "b" * 44}, "vendor_accept_key", "page"),
    ("/mydata/profile", {"name": "email", "value": "ann@example.org"}, "profile_set", "id"),
    ("/mydata/profile/loyalty/annotate", {"annotation": "mine"}, "profile_annotate", "id"),
    ("/mydata/profile/email/delete", {}, "profile_delete", "page"),
    ("/mydata/stuff", {"stuff_name": "Bike", "supplier": "acme", "purchase_date": "2024-05-01",
                       "price": "500"}, "stuff_add", "id"),
    ("/mydata/suppliers", {"vendor": "acme", "supplier_name": "Acme", "notes": "ok"}, "supplier_add", "id"),
    ("/mydata/reviews", {"review_vendor": "acme", "rating": "4", "text": "good\r\nbikes"}, "review_add", "id"),
    ("/mydata/claims", {"token": "a.b.c"}, "claims_import", "id"),
    ("/agreements/a1/revoke", {"reason": "moved"}, "revoke", "id"),
    ("/agreements/a2/cancel", {}, "cancel", "page"),
    ("/settings/companion-only", {"value": "on"}, "setting_set", "id"),
    ("/settings/erase", {"word": "ERASE"}, "erase", "id"),
    ("/settings/phones/ph-0123456789ab/unpair", {}, "phone_unpair", "page"),
    ("/settings/export", {}, "export", "page"),
]
ERROR_ID = {("/mydata/profile/loyalty/annotate", "annotation"): "annotation_loyalty",
            ("/agreements/a1/revoke", "reason"): "reason_a1",
            ("/settings/companion-only", "value"): "companion_only",
            ("/offers/o1/accept", "fields"): "fields",
            ("/intents/", "attr_reveal_0"): "attr_name_0"}
CASES = [(url, form, op, shows, name) for url, form, op, shows in FORMS for name in [*form, "next"]]


@pytest.mark.parametrize("url,form,op", [f[:3] for f in FORMS], ids=[f[0] for f in FORMS])
def test_each_complete_form_is_taken(client, box, url, form, op):
    r = client.post(url, data={"csrf_token": token(client), **form})
    assert r.status_code in (200, 302), (url, r.status_code, r.get_data(as_text=True)[:300])
    assert [o for o, _ in box.changes()] == [op]


@pytest.mark.parametrize("url,form,op,shows,name", CASES, ids=[f"{c[0]}:{c[4]}" for c in CASES])
@pytest.mark.parametrize("bad", ["\x00", "\x1b[2J", "\x9b"])
def test_a_control_character_in_any_field_is_refused_and_changes_nothing(client, box, url, form, op,
                                                                         shows, name, bad):
    data = {**form, name: form.get(name, "/") + bad}
    r = client.post(url, data={"csrf_token": token(client), **data})
    page = r.get_data(as_text=True)
    assert r.status_code == 400, (url, name, r.status_code)
    assert not box.changes(), (url, name, box.changes())
    assert "control character" in page and str(html_escape(textsafe.escape(bad[0]))) in page
    if shows == "id" and name != "next":
        assert f'id="{ERROR_ID.get((url, name), name)}-error"' in page, (url, name)


@pytest.mark.parametrize("url,form,op", [f[:3] for f in FORMS if f[1]], ids=[f[0] for f in FORMS if f[1]])
def test_a_form_missing_a_field_changes_nothing_and_names_it(client, box, url, form, op):
    optional = {"fields", "attr_reveal_0"}          # checkboxes: absent means unticked
    for name in form:
        if name in optional:
            continue
        data = {k: v for k, v in form.items() if k != name}
        r = client.post(url, data={"csrf_token": token(client), **data})
        page = r.get_data(as_text=True)
        assert r.status_code == 400, (url, name, r.status_code)
        assert not box.changes(), (url, name)
        assert "missing" in page and name in page, (url, name)


def test_an_empty_rules_post_saves_nothing_and_lists_what_is_missing(client, box):
    r = client.post("/rules/", data={"csrf_token": token(client, "/rules/")})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and not box.changes()
    summary = page.split('id="_form-error"')[1].split("</p>")[0]
    for name in ("w_price", "w_delivery", "require_terms_accepted", "max_price_amount"):
        assert name in summary and f'id="{name}-error"' in page


def test_the_terms_checkbox_is_told_apart_from_a_missing_one(client, box):
    for values, expected in ((["off"], False), (["off", "on"], True)):
        box.calls.clear()
        data = {**rules_form(), "csrf_token": token(client, "/rules/")}
        data["require_terms_accepted"] = values
        assert client.post("/rules/", data=data).status_code == 302
        (_, args), = box.changes()
        assert args["rules"]["filters"]["require_terms_accepted"] is expected


def test_a_textarea_keeps_its_line_breaks_a_one_line_field_does_not(client, box):
    data = {"csrf_token": token(client), "review_vendor": "acme", "rating": "", "text": "one\r\ntwo\tthree"}
    assert client.post("/mydata/reviews", data=data).status_code == 302
    assert box.changes()[0][1]["text"] == "one\r\ntwo\tthree"
    box.calls.clear()
    data = {"csrf_token": token(client), "name": "email", "value": "ann@example.org\nBcc: x"}
    r = client.post("/mydata/profile", data=data)
    assert r.status_code == 400 and 'id="value-error"' in r.get_data(as_text=True) and not box.changes()


def test_pairing_form_refuses_control_characters_and_missing_fields(box):
    app = create_app({"BOX": box, "SECRET_KEY": "t" * 64, "TESTING": True, "READ_CACHE_S": 0})
    c = app.test_client()
    for data in ({"code": "1234567890\x00", "name": "x"}, {"code": "1234567890", "name": "An\x1bn"},
                 {"code": "1234567890"}):
        t = csrf_from(c.get("/pair").get_data(as_text=True))
        r = c.post("/pair", data={"csrf_token": t, **data})
        assert r.status_code == 400, data
        assert "control character" in r.get_data(as_text=True) or "missing" in r.get_data(as_text=True)
    assert not [op for op, _ in box.calls if op == "pair_complete"]


# ============================================================== the API
def api_token(client: Any) -> str:
    return client.get("/api/v1/session").get_json()["csrf_token"]


@pytest.mark.parametrize("method,url,body,field", [
    ("PUT", "/api/v1/profile/email", {"value": "ann@example.org\x00"}, "value"),
    ("POST", "/api/v1/intents", {"category": "bikes", "description": "for\x00 town"}, "description"),
    ("POST", "/api/v1/intents", {"category": "bikes", "attributes": {"size": "L\x1b[2J"}}, "attributes.size"),
    ("POST", "/api/v1/offers/o1/accept", {"fields": ["email"], "purpose": "x\x9b"}, "purpose"),
    ("POST", "/api/v1/agreements/a1/revoke", {"reason": "\x07"}, "reason"),
    ("PUT", "/api/v1/rules", {"rules": {"version": 1, "brands": {"liked": ["Bro\x00mpton"]}}},
     "rules.brands.liked[0]"),
    ("POST", "/api/v1/intents/preset", {"name": "town\nbike"}, "name"),
])
def test_api_refuses_control_characters_in_any_field(client, box, method, url, body, field):
    r = client.open(url, method=method, json=body, headers={"X-CSRFToken": api_token(client)})
    assert r.status_code == 400, r.get_json()
    answer = r.get_json()
    assert answer["code"] == "bad_request" and answer["field"] == field and "control character" in answer["error"]
    assert not box.changes()


def test_api_pair_refuses_a_control_character(box):
    app = create_app({"BOX": box, "SECRET_KEY": "t" * 64, "TESTING": True, "READ_CACHE_S": 0})
    c = app.test_client()
    r = c.post("/api/v1/pair", json={"code": "12345\x0067890"}, headers={"X-CSRFToken": api_token(c)})
    assert r.status_code == 400 and r.get_json()["field"] == "code"
    assert not [op for op, _ in box.calls if op == "pair_complete"]


def test_json_control_finds_keys_and_nested_values():
    assert inputs.json_control({"a": [{"b": "ok"}, {"c": "x\x00"}]}) == ("a[1].c", "\x00")
    assert inputs.json_control({"k\x01": 1}) == ("body (a key)", "\x01")
    assert inputs.json_control({"a": "tab\tis a control too"}) == ("a", "\t")
    assert inputs.json_control({"a": f"bidi {RLO} is not a control"}) is None
