"""Block means gone (device/market.py): a blocked vendor's offers leave every ranking at once,
accept and confirm are refused with a reason, and its agreements waiting for the box's button
are cancelled from the phone's vendors page. A real store fed signed messages (intake_box.Box);
the last test runs the daemon's sockets and worker in-process with the phone app in front."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from device.client import ControlError
from device.daemon import ops
from device.daemon.access import BUTTON, COMPANION
from device.market import MarketError
from intake_box import Box
from vendor_messages import TestVendor
from vrm_protocol import topics


def seeded(path: Path) -> tuple[Box, str, dict[str, str]]:
    """A box with a profile, an intent and one offer each from acme (cheapest) and beta."""
    box = Box(path)
    box.store.set_profile_field("email", "ann@example.org")
    intent = box.market.add_intent("bikes", {"budget_max": 800})["intent"]
    box.intake.refresh()
    token = box.store.get_intent(intent).token
    offers = {}
    for slug, price in (("acme", 300.0), ("beta", 500.0)):
        v = TestVendor(slug)
        box.feed(topics.vendor_profile(slug), v.profile())
        box.feed(topics.offers(intent), v.offer(token, price=price, name=f"{slug} bike"))
        offers[slug] = next(o.offer_id for o in box.store.list_offers(intent) if o.vendor == slug)
    return box, intent, offers


@pytest.fixture
def box(tmp_path):
    b, intent, offers = seeded(tmp_path / "box")
    yield b, intent, offers
    b.store.close()


def vendors_ranked(market, **kw) -> list[str]:
    return [r["vendor"] for r in market.ranked_offers(**kw)]


def test_a_blocked_vendors_offers_leave_the_ranking_at_once(box):
    b, intent, offers = box
    m = b.market
    assert vendors_ranked(m) == ["acme", "beta"]                 # the cheapest first
    assert m.place_offer(offers["acme"], "bikes") is not None
    m.set_vendor_status("acme", "blocked")
    assert vendors_ranked(m) == ["beta"]
    assert vendors_ranked(m, intent_id=intent) == ["beta"]
    # every face reads the same operation: the box's screen (button.sock), the phone, the CLI
    for role in (BUTTON, COMPANION):
        assert [r["vendor"] for r in ops.run(m, "offers", {}, role)] == ["beta"]
    # shown among the filtered-out ones, with the reason, never ranked
    every = m.ranked_offers(include_ineligible=True)
    assert [(r["vendor"], r["eligible"]) for r in every] == [("beta", True), ("acme", False)]
    assert every[1]["explanation"]["failed"] == ["vendor_status: acme is blocked"]
    assert m.place_offer(offers["acme"], "bikes") is None           # the intake's leaderboard too
    assert m.place_offer(offers["beta"], "bikes").position == 1           # first, acme gone
    m.set_vendor_status("acme", "allowed")
    assert vendors_ranked(m) == ["acme", "beta"]


def test_a_block_by_another_connection_is_seen_too(box, tmp_path):
    """The CLI writes to the store beside the daemon: the daemon's market must not keep ranking."""
    b, _, _ = box
    assert vendors_ranked(b.market) == ["acme", "beta"]
    from device.store import Store
    with Store.open(tmp_path / "box") as other:
        other.set_vendor_status("acme", "blocked")
    assert vendors_ranked(b.market) == ["beta"]


def test_accept_and_its_preview_are_refused_with_a_reason(box):
    b, _, offers = box
    b.market.set_vendor_status("acme", "blocked")
    for role in (BUTTON, COMPANION):
        with pytest.raises(MarketError, match="acme is blocked, so its offers cannot be accepted"):
            ops.run(b.market, "offer_accept", {"offer": offers["acme"], "fields": ["email"]}, role)
        with pytest.raises(MarketError, match="acme is blocked"):
            ops.run(b.market, "accept_preview", {"offer": offers["acme"]}, role)
    assert b.store.list_agreements() == []
    assert "agreement" in b.market.accept(offers["beta"], ["email"])         # others still can


def test_an_agreement_waiting_for_the_button_is_not_sent_after_a_block(box):
    b, _, offers = box
    agreement = b.market.accept(offers["acme"], ["email"])["agreement"]
    result = b.market.set_vendor_status("acme", "blocked")
    assert result == {"vendor": "acme", "status": "blocked", "pending_agreements": [agreement]}
    with pytest.raises(MarketError, match="acme is blocked, so nothing is sent to it"):
        b.market.confirm(agreement, "button")
    assert b.outbox(topics.agreements("acme")) == []
    assert b.market.cancel(agreement)["status"] == "ended"
    assert vendors_ranked(b.market) == ["beta"]                   # back to "new", still not ranked


@pytest.mark.timeout(120)
def test_the_vendors_page_blocks_and_cancels_what_waits(tmp_path):
    from companion_app.box import Box as PhoneBox
    from test_companion_helpers import csrf_from, make_app
    from test_consent import Running

    b, _, offers = seeded(tmp_path / "box")
    agreement = b.market.accept(offers["acme"], ["email"])["agreement"]
    b.store.close()
    sock_dir = Path(tempfile.mkdtemp(prefix="vrmbox-sock-"))
    try:
        with Running(tmp_path / "box", sock_dir) as run:
            app = make_app(sock_dir / "control.sock")
            phone = app.test_client()
            token = csrf_from(phone.get("/pair").get_data(as_text=True))
            r = phone.post("/pair", data={"code": run.control("pair_code")["code"], "name": "Ann",
                                          "csrf_token": token})
            assert r.status_code == 302
            page = phone.get("/vendors/").get_data(as_text=True)
            assert "1 agreement with this vendor waits" in page
            token = csrf_from(page)
            r = phone.post("/vendors/acme/status", data={"status": "blocked", "csrf_token": token})
            assert r.status_code == 302
            page = phone.get("/vendors/").get_data(as_text=True)
            assert "Its offers are no longer ranked" in page and "cancel them below" in page
            assert [o["vendor"] for o in run.control("offers")] == ["beta"]     # at once
            assert [o["vendor"] for o in run.button("offers")] == ["beta"]      # the box's screen
            assert "acme bike" not in phone.get("/").get_data(as_text=True)     # the phone's
            with pytest.raises(ControlError, match="acme is blocked"):
                run.button("confirm", {"agreement": agreement})                  # even the button
            r = phone.post("/vendors/acme/cancel-pending", data={"csrf_token": csrf_from(page)})
            assert r.status_code == 302
            assert run.agreement_status(agreement) == "ended"
            page = phone.get("/vendors/").get_data(as_text=True)
            assert "cancelled; nothing was sent" in page and "waits for the box's button" not in page
            assert run.sent_agreements() == []
            with pytest.raises(ControlError, match="acme is blocked"):                # offer open again
                run.control("offer_accept", {"offer": offers["acme"], "fields": ["email"]})
            assert PhoneBox(sock_dir / "control.sock").call("pending")["agreements"] == []
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
