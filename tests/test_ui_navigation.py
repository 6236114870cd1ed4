"""Navigation is pure: (state, event) -> (state, requests). Walks every screen, and checks the
consent rule: only a long SELECT that went down on the accept or pending screen, for the same
offer/agreement, produces a request that releases data."""
from __future__ import annotations

from dataclasses import replace

import pytest

from device.ui.navigation import initial, step
from device.ui.samples import states
from device.ui.screens import frame, scroll_end
from device.ui.state import (CONSENT_OPS, MENU, READS, BoxEvent, Connection, Done, Failed, Key, Loaded,
                             Refresh, Request)


def run(state, *events):
    """Apply events; return the final state and every request made on the way."""
    out = []
    for e in events:
        state, reqs = step(state, e)
        out += reqs
    return state, out


def press(role):
    return [Key(role, "down"), Key(role, "short")]


def hold(role):
    return [Key(role, "down"), Key(role, "long")]


def base():
    return states()["status"]


def read_all(state):
    """Scroll the consent text to its end, as the person must before a hold may send."""
    return run(state, *[e for _ in range(scroll_end(state, *state.size)) for e in press("down")])[0]


def test_connecting_reads_everything_and_losing_the_daemon_says_so():
    s, reqs = run(initial(), Connection(True))
    assert s.connected and sorted(r.op for r in reqs) == sorted(READS)
    s, reqs = run(s, Connection(False, "box daemon not running, retrying"))
    assert not s.connected and s.connection_detail == "box daemon not running, retrying" and reqs == []
    s, reqs = run(s, Refresh())
    assert reqs == []                                           # no reads while down


def test_every_screen_is_reachable_and_back_leads_home():
    s = replace(base(), data=replace(base().data, pending=()))
    s, _ = run(s, *press("select"))
    assert s.screen == "menu"
    for i, (screen, _label) in enumerate(MENU):
        t, reqs = run(replace(s, cursor=i), *press("select"))
        assert t.screen == screen
        t, _ = run(t, *press("back"))
        assert t.screen == "menu"
    t, _ = run(s, *press("back"))
    assert t.screen == "status"
    # matches -> detail -> actions -> accept and back out again
    t, _ = run(replace(s, cursor=0), *press("select"), *press("down"), *press("select"))
    assert t.screen == "detail" and t.offer == "offer-2"
    t, _ = run(t, *press("select"))
    assert t.screen == "actions"
    t, reqs = run(t, *press("select"))
    assert t.screen == "accept" and reqs == [Request("accept_preview", {"offer": "offer-2"}, "read")]
    for screen in ("actions", "detail", "matches", "menu", "status"):
        t, _ = run(t, *press("back"))
        assert t.screen == screen
    # long BACK is home from anywhere
    t, _ = run(replace(s, screen="detail", offer="offer-1"), *hold("back"))
    assert t.screen == "status"
    t, _ = run(replace(s, screen="agreements"), Key("home"))
    assert t.screen == "status"


def test_select_on_status_goes_to_what_waits_for_a_press():
    s, reqs = run(base(), *press("select"))
    assert s.screen == "pending" and [r.op for r in reqs] == ["pending"]


def test_rotated_joystick_roles_move_the_cursor():
    s = replace(base(), screen="menu", cursor=0)
    assert run(s, *press("down"))[0].cursor == 1
    assert run(s, *press("up"))[0].cursor == len(MENU) - 1     # wraps
    assert run(s, *press("right"))[0].screen == MENU[0][0]
    assert run(s, *press("left"))[0].screen == "status"


def _all_screens():
    return [(name, st) for name, st in states().items() if st.connected]


@pytest.mark.parametrize("name", [n for n, _ in _all_screens()])
def test_short_presses_release_nothing_on_any_screen(name):
    s = states()[name]
    for role in ("select", "up", "down", "left", "right", "back", "home"):
        _, reqs = run(s, *press(role))
        assert not [r for r in reqs if r.op in CONSENT_OPS], (name, role, reqs)


@pytest.mark.parametrize("name", [n for n, st in _all_screens() if st.screen not in ("accept", "pending")])
def test_a_long_press_off_the_accept_and_pending_screens_releases_nothing(name):
    s = states()[name]
    for role in ("select", "up", "down", "left", "right", "back"):
        _, reqs = run(s, *hold(role))
        assert not [r for r in reqs if r.op in CONSENT_OPS], (name, role, reqs)


def test_a_long_press_on_accept_accepts_then_confirms_exactly_the_preview():
    s = read_all(states()["accept"])
    s, reqs = run(s, *hold("select"))
    assert reqs == [Request("offer_accept", {"offer": "offer-1", "fields": ["email", "postal_address"],
                                             "purpose": "deliver the bike", "duration_days": 30}, "consent")]
    assert s.busy == "offer_accept"
    s, reqs = run(s, Done(reqs[0], {"agreement": "agr-9", "status": "pending_confirmation"}))
    assert reqs == [Request("confirm", {"agreement": "agr-9"}, "consent")]
    s, reqs = run(s, Done(reqs[0], {"agreement": "agr-9", "status": "confirmed"}))
    assert s.sent == ("confirm:agr-9",) and s.screen == "agreements" and s.busy is None


def test_a_failed_confirm_after_accept_cancels_the_agreement():
    s, reqs = run(read_all(states()["accept"]), *hold("select"))
    s, reqs = run(s, Done(reqs[0], {"agreement": "agr-9"}))
    s, reqs = run(s, Failed(reqs[0], "agreement agr-9 (or its offer) expired"))
    assert reqs == [Request("cancel", {"agreement": "agr-9"}, "cleanup")] and s.sent == ()
    assert "expired" in s.notice


def test_a_hold_that_began_on_another_screen_or_offer_releases_nothing():
    # SELECT went down on actions (which then opened accept): the long press does not count
    s = replace(states()["actions"], cursor=0)
    s, reqs = run(s, Key("select", "down"), Key("select", "short"))
    s = replace(s, data=replace(s.data, preview=states()["accept"].data.preview))
    s, reqs = run(s, Key("select", "long"))
    assert s.screen == "accept" and reqs == []
    # the pending list changed under the held button: a different agreement is now selected
    p = states()["pending"]
    p, _ = run(p, Key("select", "down"))
    p = replace(p, data=replace(p.data, pending=p.data.pending[1:]))
    p, reqs = run(p, Key("select", "long"))
    assert reqs == [] and "again" in p.notice


def test_no_preview_no_consent():
    s = replace(states()["accept"], data=replace(states()["accept"].data, preview=None))
    _, reqs = run(s, *hold("select"))
    assert reqs == []
    other = {**states()["accept"].data.preview, "offer": "offer-2"}   # a preview for another offer
    s = replace(states()["accept"], data=replace(states()["accept"].data, preview=other))
    assert run(s, *hold("select"))[1] == []


def test_pending_agreements_confirm_and_requests_approve_on_a_long_press_only():
    s = states()["pending"]
    _, reqs = run(read_all(s), *hold("select"))
    assert reqs == [Request("confirm", {"agreement": "agr-1"}, "consent")]
    s2, reqs = run(read_all(s), *press("down"), *hold("select"))     # past its end: the next item
    assert s2.cursor == 1 and reqs == [Request("approve", {"request": "req-1"}, "consent")]
    # a short press asks to refuse; yes sends cancel / deny (nothing released)
    t, reqs = run(s, *press("select"))
    assert t.screen == "ask" and reqs == []
    t, reqs = run(t, *press("select"))
    assert reqs == [Request("cancel", {"agreement": "agr-1"}, "pending")] and t.screen == "pending"
    t, reqs = run(read_all(s), *press("down"), *press("select"), *press("select"))
    assert reqs == [Request("deny", {"request": "req-1"}, "pending")]
    t, reqs = run(s, *press("select"), *press("back"))
    assert t.screen == "pending" and reqs == []


def test_decline_snooze_cast_withdraw():
    s = replace(states()["actions"], cursor=2)
    s, reqs = run(s, *press("select"))
    assert reqs == [Request("offer_decline", {"offer": "offer-1"}, "offer")]
    s, reqs = run(s, Done(reqs[0], {"status": "declined"}))
    assert s.screen == "matches" and s.notice == "declined" and {"offers", "status"} <= {r.op for r in reqs}
    s, reqs = run(replace(states()["actions"], cursor=1), *press("select"))
    assert reqs == [Request("offer_snooze", {"offer": "offer-1", "seconds": 86400}, "offer")]
    s, reqs = run(replace(states()["intents"], cursor=0), *press("select"))
    assert reqs == [Request("intent_preset", {"name": "weekly groceries"}, "intent")]
    s, reqs = run(replace(states()["intents"], cursor=2), *press("select"))
    assert s.screen == "ask" and reqs == []
    s, reqs = run(s, *press("select"))
    assert reqs == [Request("intent_withdraw", {"intent": "intent-1"}, "intent")] and s.screen == "intents"


def test_events_from_the_box_refresh_what_they_touch():
    s = base()
    assert {r.op for r in run(s, BoxEvent({"type": "offer", "offer": "x"}))[1]} == {"offers", "status"}
    assert {r.op for r in run(s, BoxEvent({"type": "agreement_active"}))[1]} == {"agreements"}
    t, reqs = run(s, BoxEvent({"type": "pending"}))
    assert [r.op for r in reqs] == ["pending"] and t.notice
    assert run(s, BoxEvent({"type": "something new"}))[1] == []


def test_matches_follow_the_stream_and_count_what_is_new():
    s = base()
    assert s.new_matches() == 2
    s, _ = run(s, *press("back"))                          # status stays status
    s, _ = run(replace(s, screen="menu", cursor=0), *press("select"))
    assert s.screen == "matches" and s.new_matches() == 0
    more = list(s.data.offers) + [{"offer": "offer-9", "vendor": "zeta", "price": 1, "currency": "EUR"}]
    s, _ = run(s, Loaded("offers", more))
    assert len(s.data.offers) == 4 and s.new_matches() == 0  # seen while on the list
    s, _ = run(s, *press("back"), Loaded("offers", more + [{"offer": "offer-10"}]))
    assert s.new_matches() == 1


def test_an_operation_the_socket_lacks_is_marked_unavailable():
    s = states()["actions"]
    s, reqs = run(s, *press("select"))
    s, _ = run(s, Failed(reqs[0], "operation 'accept_preview' is not available on this socket"))
    assert "accept_preview" in s.data.unavailable and s.screen == "accept"
    s, reqs = run(s, *press("back"), *press("select"))
    assert s.screen == "accept" and reqs == []             # not asked again
    s, reqs = run(s, *hold("select"))
    assert reqs == []


def test_garbage_answers_do_not_break_the_state():
    s = base()
    for op in ("status", "offers", "intents", "agreements", "presets", "pending", "pair_code", "accept_preview"):
        for junk in (None, 5, "x", [1, "a", None], {"agreements": "no"}):
            s, _ = run(s, Loaded(op, junk))
    assert s.data.offers == () and s.data.pending == ()
    for screen in ("status", "menu", "matches", "detail", "actions", "accept", "pending", "intents",
                   "agreements", "pair"):
        for height in (64, 32):
            assert frame(replace(s, screen=screen, offer="offer-1"), 128, height, 0).size == (128, height)
