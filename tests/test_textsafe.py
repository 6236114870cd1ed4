"""Text safety on the faces with room for it: device/textsafe.py, the one rule
for vendor text, and how the CLI's listings and the demo's terminal lines show it. Bidi and
invisible format characters (Unicode Cf) and control characters (Cc) in vendor text become
visible escapes (<U+202E>); ordinary text in every script stays as it is. The phone app's pages:
tests/test_companion_textsafe.py."""
from __future__ import annotations

import io
import json
import unicodedata
from contextlib import redirect_stdout
from types import SimpleNamespace

from device import textsafe
from device.cli.market import _offers_text, _pending_text, _table
from demo.output import Tally, event_line, summary_text
from demo.run import _emit

RLO, LRI = "\u202e", "\u2066"
# Every character the issue names (U+202A-U+202E, U+2066-U+2069, U+200B-U+200F, U+FEFF, U+061C),
# some more of category Cf (soft hyphen, word joiner, a tag), and C0/C1 controls.
LISTED = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0x200B, 0x2010),
                           0xFEFF, 0x061C)]
HIDDEN = LISTED + ["\u00ad", "\u2060", "\U000e0041", "\x00", "\x1b", "\x07", "\x7f", "\x9b"]
ITEM = f"Invoice {RLO}fdp.exe"          # reads "Invoice exe.pdf" when the override is obeyed
VENDOR_NAME = f"Acme{LRI}{RLO}\u200b Bikes"


# ============================================================== the rule (device/textsafe.py)
def test_every_listed_character_is_cf_and_shown_as_an_escape():
    for ch in LISTED:
        assert unicodedata.category(ch) == "Cf", hex(ord(ch))
    for ch in HIDDEN:
        for shown in (textsafe.for_page(f"a{ch}b"), textsafe.for_terminal(f"a{ch}b")):
            assert ch not in shown and textsafe.escape(ch) in shown, (hex(ord(ch)), shown)
        if ch != "\u200d":                      # the compact form keeps ZWJ (the OLED drops it)
            assert ch not in textsafe.printable(f"a{ch}b")
    assert textsafe.for_page(ITEM) == "Invoice <U+202E>fdp.exe"          # logical order, visible


def test_readable_text_stays_as_it_is():
    for text in ("Acme Bikes", "Zoë 自転車", "900.5 EUR", "👨\u200d👩\u200d👧 family", "🏳\ufe0f\u200d🌈"):
        assert textsafe.for_page(text) == text and textsafe.for_terminal(text) == text
    assert textsafe.for_page("a\u200db") == "a<U+200D>b"                 # a ZWJ hidden in a word shows
    assert textsafe.for_page("line one\nline two\t!") == "line one\nline two\t!"   # <pre> keeps them
    assert textsafe.for_terminal("forged\nREFUSED  line") == "forged REFUSED line"   # no forged line
    hebrew = "\u05e9\u05dc\u05d5\u05dd"
    assert textsafe.for_page(hebrew) == f"\u2068{hebrew}\u2069"          # isolated: cannot pull the price
    assert textsafe.for_terminal(hebrew) == hebrew


def test_json_for_terminal_is_the_same_json_with_escapes():
    value = {"item": ITEM + "\x9b31m\u2028", "name": "Zoë"}
    text = textsafe.json_for_terminal(value, sort_keys=True)
    assert json.loads(text) == value and "Zoë" in text
    assert not any(c in text for c in (RLO, "\x9b", "\u2028"))



# ============================================================== the CLI and the demo's terminal
HOSTILE_ROW = {"score": 0.5, "vendor": "acme", "item": f"\x1b[2J{ITEM}", "price": 900.5,
               "currency": f"{RLO}EUR", "offer": "o1", "eligible": True,
               "explanation": {"contributions": {"price": 0.5}, "failed": [f"terms{RLO}"]}}


def _terminal_safe(text: str) -> None:
    assert not any(c in text for c in HIDDEN if c != "\n"), [hex(ord(c)) for c in text if c in HIDDEN]


def test_cli_listings_show_vendor_text_as_escapes():
    text = _offers_text([HOSTILE_ROW])
    _terminal_safe(text)
    assert "<U+001B>[2JInvoice <U+202E>fdp.exe — 900.5 <U+202E>EUR" in text and "terms<U+202E>" in text
    _terminal_safe(_table([{"vendor": VENDOR_NAME, "rejections": {RLO: 1}}], ["vendor", "rejections"]))
    pending = _pending_text({"agreements": [{"agreement": "a1", "fields": ["email"], "vendor": VENDOR_NAME,
                                             "requested_by": "phone"}], "requests": []})
    _terminal_safe(pending)
    assert "Acme<U+2066><U+202E><U+200B> Bikes" in pending


def test_demo_terminal_lines_show_vendor_text_as_escapes():
    t = Tally()
    line = event_line({"type": "offer", "vendor": f"acme{RLO}", "item": ITEM, "price": 900.5,
                       "currency": "EUR", "eligible": True, "position": 1, "category": "bikes"}, t)
    _terminal_safe(line)
    assert "acme<U+202E>: Invoice <U+202E>fdp.exe 900.5 EUR  #1 for bikes" in line
    line = event_line({"type": "rejected", "reason": "replay", "vendor": "evil\x1b]0;pwned\x07"}, t)
    _terminal_safe(line)
    assert "in the name of evil<U+001B>]0;pwned<U+0007>" in line
    for kind in ("agreement_active", "vendor_new", "revocation_acknowledged"):
        _terminal_safe(event_line({"type": kind, "vendor": f"x{RLO}\n"}, t))
    summary = {"stopped_by": "time", "ran_s": 1, "offers_ranked": 1, "offers_received": 1,
               "offers_filtered_out": 0, "rejected": {}, "agreements": 0,
               "top_offers": [{"vendor": VENDOR_NAME, "item": ITEM, "price": 900.5, "currency": f"{RLO}EUR",
                               "score": 0.9}]}
    text = summary_text(summary)
    _terminal_safe(text)
    assert "Invoice <U+202E>fdp.exe 900.5 <U+202E>EUR" in text


def test_demo_json_summary_is_terminal_safe_and_the_same_value():
    summary = {"ok": True, "top_offers": [{"vendor": VENDOR_NAME, "item": ITEM + "\x9b"}]}
    out = io.StringIO()
    with redirect_stdout(out):
        assert _emit(SimpleNamespace(json=True), summary, None) == 0
    _terminal_safe(out.getvalue())
    assert json.loads(out.getvalue()) == summary

