"""Pages a person reads, in the fast lane: the phone app against the fake box of
test_companion_textsafe.py. The audit log as sentences, counts that add up, scores on a scale
with reasons in words, vendors by name, prices and times marked up for the phone's locale with a
correct text of their own, field names in words, the accept page's terms, delivery and what was
asked for, notices that follow the agreement's state, no Accept on an offer the rules hide, a
compact menu and a favicon. How they look and read in Chromium: test_companion_pages_e2e.py."""
from __future__ import annotations

import re
from typing import Any

import pytest

from companion_app import create_app, security
from companion_app.audit import WORDS, timeline, verified
from companion_app.dashboard import tally
from companion_app.pages import (fallback_money, filter_words, label, labels, money, score_scale,
                                 when)
from test_companion_helpers import csrf_from
from test_companion_textsafe import SECRET, FakeBox, _offer

NAME = "Acme Bikes"


class PagesBox(FakeBox):
    """The fake box with a clean vendor name, and `offers` answering as the daemon does: the
    open eligible offers, or with `all` every offer of the intent."""

    def __init__(self) -> None:
        super().__init__()
        self.answers["vendors"][0]["name"] = NAME
        self.answers["vendors"][0]["key_changed"] = False
        self.answers["offers"] = [_offer(1, explanation={"contributions": {"price": 0.6, "known_supplier": 0.3},
                                                         "passed": ["require_terms_accepted"], "failed": []})]
        self.answers["intents"][0]["offers"] = 3
        self.everything = [*self.answers["offers"],
                           _offer(2, vendor="beta", eligible=False, score=0.0,
                                  explanation={"contributions": {}, "passed": [],
                                               "failed": ["max_price: 950 EUR > 800 EUR"]}),
                           _offer(3, status="declined")]

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        if op == "offers" and (args or {}).get("all"):
            self.calls.append((op, dict(args or {})))
            return [dict(o) for o in self.everything]
        return super().call(op, args)


@pytest.fixture
def box() -> PagesBox:
    return PagesBox()


@pytest.fixture
def client(box: PagesBox) -> Any:
    app = create_app({"BOX": box, "SECRET_KEY": "t" * 64, "TESTING": True, "READ_CACHE_S": 0})
    c = app.test_client()
    with c.session_transaction() as s:
        s[security.SESSION_KEY] = SECRET
    return c


def page(client: Any, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code)
    return r.get_data(as_text=True)


def card(html: str, attr: str) -> str:
    """From `attr` (e.g. 'data-offer="o1"') to the next element of its kind, or the end."""
    start = html.index(attr)
    kind = attr.split("=")[0] + "="
    end = html.find(kind, start + len(attr))
    return html[start:end if end > 0 else len(html)]


# ============================================================== the audit log
def test_the_audit_log_is_a_timeline_in_words(client, box):
    box.answers["audit"] = {"total": 3, "entries": [
        {"seq": 1, "event_type": "phone_paired", "created_at": 1_900_000_000,
         "data": {"phone": "ph-1", "name": "Ann's phone"}},
        {"seq": 2, "event_type": "data_disclosed", "created_at": 1_900_000_100,
         "data": {"agreement": "a1", "vendor": "acme", "fields": ["email", "postal_address"]}},
        {"seq": 3, "event_type": "agreement_revoked", "created_at": 1_900_000_200,
         "data": {"agreement": "a1", "vendor": "acme"}}]}
    box.answers["audit_verify"] = {"ok": False, "first_bad": 3, "reason": "hash", "count": 3}
    html = page(client, "/audit/")
    assert "<code>" not in html and "&#34;" not in html and "\\u0027" not in html
    assert "Paired a phone: “Ann&#39;s phone”." in html
    sent = card(html, 'data-event="data_disclosed"')
    assert f"Sent your Email and Postal address to {NAME}." in sent
    assert 'title="acme"' in sent and 'datetime="2030-03-17T17:48:20Z"' in sent
    assert "entry 2" in sent and 'class="verified"' in sent
    assert 'class="unverified"' in card(html, 'data-event="agreement_revoked"')
    assert html.index('data-seq="3"') < html.index('data-seq="1"')          # newest first
    assert '<option value="data_disclosed" >Data sent</option>' in html


def test_every_kind_of_entry_has_words_and_an_unknown_one_no_json():
    app = create_app({"BOX": PagesBox(), "SECRET_KEY": "t" * 64, "TESTING": True})
    with app.test_request_context():
        for kind, (name, sentence) in WORDS.items():
            assert name and "_" not in name, kind
            text = sentence({})                # an entry without data still reads
            assert text and "None" not in text, kind
        got = timeline([{"seq": 9, "event_type": "box_rebooted", "created_at": 1, "data": {"after_s": 3}}],
                       {"ok": True})
    assert got[0]["what"] == "Box rebooted" and got[0]["details"] == [("After s", 3)]
    assert timeline([{"seq": 1, "event_type": "setting_changed", "data": {"key": "consented:abc"}}],
                    None)[0]["what"] == "Your press on the box fixed what an agreement sends"
    assert verified(5, {"ok": True}) and not verified(5, {"ok": False, "first_bad": 5})
    assert verified(5, None) is None and verified(4, {"ok": False, "first_bad": 5})


# ============================================================== counts, scores, words
def test_the_counts_add_up_and_say_where_the_rest_went(client, box):
    html = page(client, "/")
    assert ('3 offers received: 1 shown, 1 hidden by your rules, 1 declined — '
            '<a href="/intents/i1#not-shown">show</a>') in html
    shown = page(client, "/intents/i1")
    assert 'id="not-shown"' in shown and "over your highest price (950 EUR &gt; 800 EUR)" in shown


def test_nothing_more_is_asked_when_the_counts_already_add_up(client, box):
    box.answers["intents"][0]["offers"] = 1
    html = page(client, "/")
    assert "1 offer received ·" in html and "hidden by your rules" not in html
    assert ("offers", {"intent": "i1", "all": True}) not in box.calls


def test_tally_divides_what_is_not_shown():
    offers = [_offer(1), _offer(2, eligible=False), _offer(3, status="snoozed"),
              _offer(4, eligible=False, explanation={"failed": ["not_expired: expired 5 s ago"]}),
              _offer(5, status="accepted")]
    assert tally(6, {"o1"}, offers) == [("hidden", "hidden by your rules", 1), ("expired", "expired", 1),
                                        ("snoozed", "snoozed", 1), ("accepted", "accepted", 1),
                                        ("other", "closed", 1)]


def test_a_score_has_its_scale_and_reasons_in_words(client, box):
    html = page(client, "/")
    offer = card(html, 'data-offer="o1"')
    # rules: price 1.0 + delivery 0.5 -> the best an offer can reach is 1.50
    assert re.search(r'score <data class="number" value="0.9">0.90</data> of '
                     r'<data class="number" value="1.5">1.50</data> possible', offer), offer
    assert "A supplier you already use: " in offer and "Price: " in offer
    assert "the vendor accepted your terms" in offer
    assert "known_supplier" not in offer and "require_terms_accepted" not in offer


def test_score_scale_words_and_labels():
    assert score_scale({"weights": {"price": 1, "reputation": 0.3, "brands_liked": 0.2,
                                    "brands_disliked": 0.5, "attributes": [{"weight": 2}, {"weight": -1}]},
                        "brands": {"liked": []}}) == pytest.approx(3.3)
    assert score_scale(None) is None
    assert label("postal_address") == "Postal address" and label("frame_size") == "Frame size"
    assert label("favourite_colour") == "Favourite colour"
    assert labels(["email", "postal_address", "phone"]) == "Email, Postal address and Phone number"
    assert filter_words("vendors_block: acme is blocked", False) == "a vendor you blocked (acme is blocked)"
    assert filter_words("not_expired", True) == "still open"


def test_vendors_by_name_with_the_slug_on_hover(client, box):
    box.answers["reviews"] = [{"vendor": "acme", "rating": 4, "text": "fine"}]
    tag = f'<span class="vendor" title="acme" data-vendor="acme">{NAME}</span>'
    for path in ("/", "/intents/i1", "/offers/o1/accept", "/agreements/", "/mydata/"):
        assert tag in page(client, path), path


def test_prices_and_times_carry_machine_values_and_a_correct_text():
    assert fallback_money(351.0, "EUR") == "351.00 EUR" and fallback_money(900.5, "EUR") == "900.50 EUR"
    assert fallback_money(1500, "JPY") == "1500 JPY" and fallback_money(1.5, "KWD") == "1.500 KWD"
    assert str(money(351.0, "EUR")) == '<data class="money" value="351.0" data-currency="EUR">351.00 EUR</data>'
    assert "&lt;U+202E&gt;EUR" in str(money(1, "\u202eEUR"))        # vendor text stays neutral
    assert str(when(1_900_000_000)) == ('<time datetime="2030-03-17T17:46:40Z" data-local="datetime">'
                                        '2030-03-17 17:46 UTC</time>')
    assert str(when(None)) == "–"


def test_field_names_in_words(client, box):
    box.answers["profile"]["postal_address"] = {"value": "1 High St", "provenance": "self"}
    accept = page(client, "/offers/o1/accept")
    assert '<label for="f-postal_address" title="postal_address">Postal address</label>' in accept
    mine = page(client, "/mydata/")
    assert '<strong title="postal_address">Postal address</strong>' in mine
    assert "Delete Postal address" in mine
    assert "Shares Email with" in card(page(client, "/agreements/"), 'data-agreement="a1"')
    intent = page(client, "/intents/i1")
    assert '<dt title="budget_max">Highest budget</dt>' in intent and "{&#34;" not in intent


def test_the_accept_page_says_terms_delivery_and_what_was_asked(client, box):
    box.answers["offers"][0].update(delivery_days=3, region="GB-LND", terms_accepted=True)
    html = page(client, "/offers/o1/accept")
    assert re.search(r'id="terms">.*accepted your terms for this offer', html)
    assert 'id="delivery">in 3 days · to GB-LND' in html
    assert re.search(r'id="asked">bikes: for town · <span title="budget_max">Highest budget</span> 900', html)
    assert "Pressing on the box alone would share: Email" in html
    box.answers["offers"][0].update(terms_accepted=False, delivery_days=None, region=None)
    html = page(client, "/offers/o1/accept")
    assert "did not accept your terms" in html and 'id="delivery"' not in html


# ============================================================== notices follow the state
def test_notices_follow_the_agreement_state(client, box):
    box.answers["agreements"] += [
        {"agreement": "a3", "vendor": "acme", "status": "revoked", "fields": ["email"], "purpose": "p",
         "duration_days": 30, "created_at": 5, "countersigned": True, "revocation": "pending"},
        {"agreement": "a4", "vendor": "acme", "status": "ended", "fields": ["email"], "purpose": "p",
         "duration_days": 30, "created_at": 6, "countersigned": False}]
    html = page(client, "/agreements/")
    pending = card(html, 'data-agreement="a2"')
    assert "Nothing has been sent. Press the button on the box" in pending
    active = card(html, 'data-agreement="a1"')
    assert "Nothing" not in active and "Press the button" not in active
    revoked = card(html, 'data-agreement="a3"')
    assert "Shares" not in revoked and "No longer shared" in revoked
    assert "Ended before anything was sent" in card(html, 'data-agreement="a4"')


def test_the_flash_after_accepting_does_not_outlive_the_state(client, box):
    tok = csrf_from(page(client, "/offers/o1/accept"))
    r = client.post("/offers/o1/accept", data={"csrf_token": tok, "fields": ["email"], "purpose": "p",
                                               "duration_days": "30"}, follow_redirects=True)
    html = r.get_data(as_text=True)
    flashes = html[html.index('class="flashes"'):html.index("</div>", html.index('class="flashes"'))]
    assert "Accepted and signed" in flashes and "Nothing is sent" not in flashes


# ============================================================== no Accept where the rules hide it
def test_no_accept_on_an_offer_the_rules_hide(client, box):
    box.answers["offers"] = box.everything
    html = page(client, "/intents/i1")
    assert 'href="/offers/o2/accept"' not in card(html, 'data-offer="o2"')
    assert 'href="/offers/o1/accept"' in card(html, 'data-offer="o1"')
    shown = page(client, "/offers/o2/accept")
    assert 'id="refusal"' in shown and "over your highest price" in shown and "Accept and sign" not in shown
    tok = csrf_from(page(client, "/settings/"))
    r = client.post("/offers/o2/accept", data={"csrf_token": tok, "fields": ["email"], "purpose": "p",
                                               "duration_days": "30"})
    assert r.status_code == 400 and not box.changes()


# ============================================================== the frame of every page
def test_a_compact_menu_the_live_label_in_the_header_and_a_favicon(client):
    html = page(client, "/rules/")
    header = html[html.index("<header"):html.index("</header>")]
    assert header.count("<details>") == 1 and 'id="live-status"' in header
    assert '<span class="here">Rules</span>' in header
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
    fresh = create_app({"BOX": FakeBox(), "SECRET_KEY": "t" * 64, "TESTING": True}).test_client()
    r = fresh.get("/static/favicon.svg")                       # unpaired too: every first load
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
