"""Fit untrusted text (vendor names, items, currencies) into a pixel width.

Why: vendors choose their names. Control characters, right-to-left overrides, zero-width
characters, 2,000-character names and glyphs the OLED font lacks must neither break the
layout nor crash the renderer (PIL's bitmap font raises on anything outside Latin-1).
"""
from __future__ import annotations

import logging
import math
import unicodedata
from typing import Any, Protocol

from device.textsafe import printable

log = logging.getLogger(__name__)

MAX_CHARS = 240                  # nothing on a 128-pixel screen needs more; bounds the work
ELLIPSIS = ".."                  # the font has no U+2026; two dots read as one at 6 px a glyph
REPLACEMENT = "?"
_DROP = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me", "Mc", "Zl", "Zp"})


class Font(Protocol):
    def getlength(self, text: str) -> float: ...


def _renderable(ch: str) -> bool:
    o = ord(ch)
    return 0x20 <= o <= 0x7E or 0xA0 <= o <= 0xFF


def clean(value: Any, limit: int = MAX_CHARS) -> str:
    """One safe line for the OLED font: device.textsafe.printable first (controls and bidi
    overrides become U+FFFD, which shows here as '?'), then compatibility-decomposed (full-width letters become ASCII, accents are
    dropped: on 9-pixel rows they would touch the row above), control, format (bidi
    overrides, zero-width) and combining characters dropped, whitespace collapsed, glyphs the
    font lacks replaced by '?', at most `limit` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = printable(text[: limit * 4])                    # the box's one rule for vendor text
    text = unicodedata.normalize("NFKD", text)
    out: list[str] = []
    for ch in text:
        if ch in "\t\n\r\v\f" or unicodedata.category(ch) == "Zs":
            if out and out[-1] != " ":
                out.append(" ")
            continue
        if unicodedata.category(ch) in _DROP:
            continue
        out.append(ch if _renderable(ch) else REPLACEMENT)
        if len(out) >= limit:
            break
    return "".join(out).strip()


def fit(text: str, font: Font, width: int) -> str:
    """`text` (already clean) cut to `width` pixels, ending in an ellipsis when cut."""
    if font.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:                                         # longest prefix that fits with ".."
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid].rstrip() + ELLIPSIS) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS if lo or font.getlength(ELLIPSIS) <= width else ""


def wrap(text: str, font: Font, width: int, max_lines: int | None = None) -> list[str]:
    """Word-wrap clean text to `width` pixels; very long words are broken; the last allowed
    line ends in an ellipsis if text was left over."""
    words, lines, line = text.split(" "), [], ""
    for word in words:
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > width:                # hard-break a word wider than a line
            n = max(1, len(fit(word, font, width + int(font.getlength(ELLIPSIS)))) - len(ELLIPSIS))
            lines.append(word[:n])
            word = word[n:]
        line = word
    if line:
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1:])
        lines = lines[: max_lines - 1] + [fit(rest, font, width)]
    return lines


def money(price: Any, currency: Any) -> str:
    """A vendor's price and currency as short, safe text ('520.00 EUR', '?' when not a number)."""
    cur = clean(currency, 8).upper().replace(" ", "")[:4]
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price):
        amount = "?"
    elif abs(price) < 1e7:
        amount = f"{price:.2f}"
    else:
        amount = f"{price:.2e}"
    return f"{amount} {cur}".strip()


def number(value: Any, digits: int = 2) -> str:
    """A score or contribution as short text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "?"
    return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.1e}"
