"""Untrusted vendor text: cleaned, fitted, wrapped, and drawn without leaving its row."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from device.ui.samples import HOSTILE_ITEM, HOSTILE_NAME, NOW, states
from device.ui.screens import HEADER_H, ROW_H, Canvas, font, frame
from device.ui.text import ELLIPSIS, clean, fit, money, wrap

F = font()


def test_clean_marks_controls_bidi_and_zero_width_and_replaces_missing_glyphs():
    # device.textsafe turns each into U+FFFD; the OLED font shows that as '?'
    assert clean("\u202eevil\u202c\x00\x1b[2J\u200bX") == "?evil???[2J?X"
    assert clean("Café Ø") == "Cafe \u00d8"                          # accents dropped, Latin-1 kept
    assert clean("ＡＣＭＥ bikes") == "ACME bikes"                    # full-width folded
    assert clean("漢字 Ω") == "?? ?"                                  # the font has no such glyphs
    assert clean("a\n\tb   c") == "a b c"
    assert clean(None) == "" and clean(12.5) == "12.5"
    assert len(clean(HOSTILE_NAME)) <= 240


def test_fit_cuts_with_an_ellipsis_and_leaves_short_text_alone():
    assert fit("beta", F, 128) == "beta"
    cut = fit("x" * 100, F, 60)
    assert cut.endswith(ELLIPSIS) and F.getlength(cut) <= 60
    assert fit("abc", F, 0) == ""


def test_wrap_breaks_words_and_bounds_lines():
    lines = wrap("a" * 50 + " tail", F, 60)
    assert all(F.getlength(line) <= 60 for line in lines) and "".join(lines).startswith("a" * 9)
    capped = wrap("word " * 100, F, 60, max_lines=3)
    assert len(capped) == 3 and capped[-1].endswith(ELLIPSIS)


def test_money_is_safe_for_any_json_value():
    assert money(520, "eur") == "520.00 EUR"
    assert money(float("nan"), "EUR") == "? EUR"
    assert money("520", None) == "?"
    assert money(True, "EUR") == "? EUR"
    assert money(1e300, "\u202eRUE€€€€") == "1.00e+300 ?RUE"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000), st.integers(min_value=0, max_value=128))
def test_fit_never_overflows_nor_raises(text, width):
    out = fit(clean(text), F, width)
    assert F.getlength(out) <= max(width, 0) or out == ""


def _ink_rows(text: str, right: str = "") -> tuple[int, int, int, int] | None:
    img = Image.new("1", (128, 64), 0)
    Canvas(ImageDraw.Draw(img), 128, 64, NOW).line(0, clean(text), right=right)
    return img.getbbox()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2500), st.text(max_size=40))
def test_a_row_of_any_text_stays_in_its_row(text, right):
    box = _ink_rows(text, right)
    if box is not None:
        x0, y0, x1, y1 = box
        assert y0 >= HEADER_H and y1 <= HEADER_H + ROW_H and x1 <= 128


def test_hostile_vendor_renders_every_screen_at_both_sizes():
    for name, state in states(hostile=True).items():
        for height in (64, 32):
            img = frame(state, 128, height, NOW)
            assert img.size == (128, height), name
    assert _ink_rows(HOSTILE_NAME + HOSTILE_ITEM)[3] <= HEADER_H + ROW_H
