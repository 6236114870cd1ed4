"""The box's consent screens show what goes to whom before a hold can send it, at 128x64 and
128x32: the recipient stays in the header, and a long press releases nothing until the consent
text was scrolled to its end (so every line of it has been on the screen). Also the pairing
lockout on the status screen. Pure: navigation and screens, and the golden frames on disk."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from device.ui.samples import states
from device.ui.screens import (HEADER_H, Canvas, consent_text, frame, pairing_alert, scroll_end)
from device.ui.state import CONSENT_OPS, EVENT_READS, READS, BoxEvent, Key, Loaded
from device.ui.text import clean
from test_ui_navigation import press, run

GOLDEN = Path(__file__).parent / "golden" / "ui"
SIZES = (64, 32)


def hold():
    return [Key("select", "down"), Key("select", "long")]


def consent_states(height, hostile=False):
    """The accept screen and a pending agreement, on a display of this height."""
    s = states(hostile)
    return {name: replace(s[name], size=(128, height)) for name in ("accept", "pending")}


def canvas(height):
    return Canvas(ImageDraw.Draw(Image.new("1", (128, height))), 128, height, 0.0)


@pytest.mark.parametrize("height", SIZES)
@pytest.mark.parametrize("name", ["accept", "pending"])
def test_a_hold_sends_nothing_until_the_text_was_read_to_its_end(name, height):
    s = consent_states(height)[name]
    end = scroll_end(s, 128, height)
    assert end > 0, "the sample must not fit on one screen, or the rule is not exercised"
    shown: set[str] = set()
    lines = consent_text(s, canvas(height))
    visible = canvas(height).rows - 1
    for k in range(end):
        assert s.scroll == k
        shown |= set(lines[k:k + visible])
        t, reqs = run(s, *hold())
        assert not [r for r in reqs if r.op in CONSENT_OPS], (k, reqs)
        assert "read it all" in t.notice
        s, _ = run(s, *press("down"))
    shown |= set(lines[end:end + visible])
    assert shown == set(lines)                 # every line was on screen, the recipient's too
    vendor = s.data.preview["vendor"] if name == "accept" else s.pending_item()["vendor"]
    assert f"to {vendor}" in shown
    _, reqs = run(s, *hold())
    assert [r.op for r in reqs] == (["offer_accept"] if name == "accept" else ["confirm"])


@pytest.mark.parametrize("height", SIZES)
def test_scrolling_stops_at_the_end_and_up_comes_back(height):
    s = consent_states(height)["accept"]
    end = scroll_end(s, 128, height)
    s, _ = run(s, *[e for _ in range(end + 3) for e in press("down")])
    assert s.scroll == end
    s, _ = run(s, *press("up"))
    assert s.scroll == end - 1
    assert run(s, *hold())[1] == []


def test_on_pending_down_reads_the_item_first_then_moves_to_the_next():
    s = consent_states(32)["pending"]
    end = scroll_end(s, 128, 32)
    for k in range(1, end + 1):
        s, _ = run(s, *press("down"))
        assert (s.cursor, s.scroll) == (0, k)
    s, _ = run(s, *press("down"))
    assert (s.cursor, s.scroll) == (1, 0)
    s, _ = run(s, *press("up"))
    assert (s.cursor, s.scroll) == (0, 0)


def test_another_item_under_the_cursor_must_be_read_again():
    s = consent_states(32)["pending"]
    s, _ = run(s, *[e for _ in range(scroll_end(s, 128, 32)) for e in press("down")])
    other = {"agreement": "agr-2", "vendor": "Other Ltd", "fields": ["email", "phone"],
             "purpose": "marketing", "duration_days": 365, "requested_by": "the phone app"}
    s, _ = run(s, Loaded("pending", {"agreements": [other], "requests": []}))
    assert s.scroll == 0
    assert run(s, *hold())[1] == []


def _header(text: str, right: str, height: int) -> Image.Image:
    img = Image.new("1", (128, height), 0)
    Canvas(ImageDraw.Draw(img), 128, height, 0.0).header(text, right)
    return img.crop((0, 0, 128, HEADER_H)).convert("L")


@pytest.mark.parametrize("hostile", [False, True], ids=["plain", "hostile"])
@pytest.mark.parametrize("height", SIZES)
@pytest.mark.parametrize("name", ["accept", "accept_end", "pending", "pending_end"])
def test_golden_consent_frames_show_the_recipient_in_the_header(name, height, hostile):
    s = states(hostile)[name]
    if s.screen == "accept":
        vendor, right = s.data.preview["vendor"], f"{s.data.preview['duration_days']} days"
    else:
        item = s.pending_item()
        vendor, right = item["vendor"], f"1/{len(s.data.pending)}"
    path = GOLDEN / f"{name}-{height}{'-hostile' if hostile else ''}.png"
    golden = Image.open(path).convert("L")
    expected = _header(f"to {clean(vendor, 120)}", right, height)
    assert ImageChops.difference(golden.crop((0, 0, 128, HEADER_H)), expected).getbbox() is None, path.name
    # and the frame as drawn now is the golden one
    assert ImageChops.difference(golden, frame(s, 128, height, 1_800_000_000).convert("L")).getbbox() is None


@pytest.mark.parametrize("height", SIZES)
def test_the_footer_says_hold_only_at_the_end(height):
    def footer(state):
        img = frame(state, 128, height, 1_800_000_000).convert("L")
        return img.crop((0, height - 9 - (height - HEADER_H) % 9, 128, height))
    s = consent_states(height)["accept"]
    end_state = replace(s, scroll=scroll_end(s, 128, height))
    assert ImageChops.difference(footer(s), footer(end_state)).getbbox() is not None


# ---------------------------------------------------------------------- pairing lockouts
def test_the_status_screen_reads_and_shows_pairing_lockouts():
    assert "pairing_status" in READS and "pairing_status" in EVENT_READS["changed"]
    s, reqs = run(states()["status"], BoxEvent({"type": "changed", "op": "pair_complete"}))
    assert "pairing_status" in [r.op for r in reqs]
    p = {"code": "active", "failures": 5, "clients_locked": 1, "max_failures": 30}
    s, _ = run(s, Loaded("pairing_status", p))
    assert s.data.pairing == p
    assert pairing_alert(p, 6) == ["! pairing: 5 wrong", "  1 device locked"]
    assert pairing_alert(p, 2) == ["! pair 5 wrong 1 lock"]
    assert pairing_alert({**p, "code": "spent"}, 2) == ["! pair code spent"]
    for quiet in ({}, {"code": "none", "failures": 0}, {"code": "active", "failures": 0},
                  {"code": "expired", "failures": 9}, {"code": "active", "failures": "9"}):
        assert pairing_alert(quiet, 6) == []
    a = frame(s, 128, 64, 1_800_000_000)
    b = frame(replace(s, data=replace(s.data, pairing={})), 128, 64, 1_800_000_000)
    assert ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is not None
