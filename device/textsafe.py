"""Untrusted text (vendor names, items, currencies, reasons) made safe to show a person.

Why: a vendor controls these strings. Printed raw, `ESC[2J` clears the person's terminal, NUL
and C1 controls confuse it, and U+202E (right-to-left override) put before "fdp.exe" makes
"Invoice <RLO>fdp.exe" read as "Invoice exe.pdf"; left open, it reverses whatever follows on
the line, so a price "900.5 EUR" beside it reads "RUE 5.009". Invisible format characters (zero-width space, BOM,
soft hyphen, word joiner, tags) make two different names look the same.

This module is the one rule for every face. What counts as dangerous is decided once, here
(`_kind`); each face then shows it in the form its space allows:

* `for_page` (the phone app: every `{{ ... }}` of its templates goes through it) and
  `for_terminal` (the demo's terminal, the CLI's listings of vendor text) show each format or
  control character as a visible escape, `<U+202E>`. Why escapes rather than deleting them or
  a replacement mark: the text keeps its logical order, so "Invoice <U+202E>fdp.exe" reads
  exactly as the vendor typed it, the person sees that something was hidden there and which
  character it was, and nothing is silently dropped (deleting U+200B would let "ac<ZWSP>me"
  pass for "acme"). Why not rely on isolating alone (`<bdi>`, dir="auto"): isolation contains an
  override but still obeys it inside, so the file name would still read "exe.pdf".
  `for_page` also wraps text holding right-to-left letters (Hebrew, Arabic) in U+2068 FIRST
  STRONG ISOLATE ... U+2069 POP DIRECTIONAL ISOLATE, which the browser's bidi algorithm honours
  in text and attributes alike: a genuine Arabic vendor name stays readable, right to left, and
  cannot pull the price beside it into its own direction. Text without such letters is returned
  unchanged apart from the escapes (plain text is byte for byte the same).
* `printable` is the compact form for the box's 128-pixel OLED (device/ui/text.py), where an
  8-character escape would take half a line: each such character becomes U+FFFD (the screen
  shows '?'). The CLI also passes every line it prints through it, a last net under
  `for_terminal`.

Kept as they are: ordinary letters in every script, combining marks, emoji, and U+200D ZERO
WIDTH JOINER between two emoji (family and flag sequences need it; anywhere else it is shown).
"""
from __future__ import annotations

import json
import unicodedata
from typing import Any

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
ZWJ = "\u200d"
FSI, PDI = "\u2068", "\u2069"
# Unicode's bidirectional formatting characters (UAX #9): embeddings, overrides, isolates, marks.
# All are category Cf; listed so the intent is plain (and checked by the tests).
BIDI_CONTROLS = frozenset("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = "\t\n\r\x0b\x0c"
_RTL_CLASSES = frozenset({"R", "AL", "AN"})


def _kind(ch: str) -> str:
    """'format' (Cf: bidi controls, zero-width, BOM, tags ...), 'control' (Cc, C0 and C1),
    'surrogate', 'unassigned' (Cn, and private use Co), 'separator' (U+2028/2029), else ''."""
    if ch in BIDI_CONTROLS:
        return "format"
    cat = unicodedata.category(ch)
    if cat == "Cf":
        return "format"
    if cat == "Cc":
        return "control"
    if cat == "Cs":
        return "surrogate"
    if cat in ("Cn", "Co"):
        return "unassigned"
    if cat in ("Zl", "Zp"):
        return "separator"
    return ""


def escape(ch: str) -> str:
    """The visible form of one hidden character: '<U+202E>'."""
    return f"<U+{ord(ch):04X}>"


def _joins_emoji(text: str, i: int) -> bool:
    """A ZWJ at text[i] between two emoji (after an emoji, its VS16 or skin tone; before one)."""
    if not 0 < i < len(text) - 1:
        return False
    before, after = text[i - 1], text[i + 1]
    return (before == "\ufe0f" or unicodedata.category(before) in ("So", "Sk")) \
        and unicodedata.category(after) == "So"


def _shown(text: str, one_line: bool) -> str:
    out: list[str] = []
    for i, ch in enumerate(text):
        kind = _kind(ch)
        if kind == "format":
            ch = ch if ch == ZWJ and _joins_emoji(text, i) else escape(ch)
        elif kind == "control":
            if ch in _LINE_BREAKS and one_line:
                ch = " "
            elif ch not in "\t\n\r":
                ch = escape(ch)
        elif kind == "surrogate":
            ch = REPLACEMENT                   # a lone surrogate cannot even be encoded
        elif kind == "unassigned":
            ch = escape(ch)
        elif kind == "separator":
            ch = " "
        if one_line and ch == " " and out and out[-1] == " ":
            continue
        out.append(ch)
    return "".join(out)


def _cut(s: str, limit: int | None) -> str:
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s


def for_terminal(text: object, limit: int | None = None) -> str:
    """One line for a terminal: format and control characters as `<U+XXXX>` escapes, line
    breaks and tabs (which could forge a line of their own) folded with the spaces around
    them into one space; cut to `limit` characters with '…'."""
    s = str(text)
    if s.isascii() and s.isprintable() and "  " not in s:
        return _cut(s, limit)
    return _cut(_shown(s, one_line=True), limit)


def for_page(text: str) -> str:
    """Text for an HTML page (before HTML escaping): format and control characters as
    `<U+XXXX>` escapes (tab and line breaks stay: HTML treats them as spaces, <pre> keeps
    them); text with right-to-left letters isolated between U+2068 and U+2069."""
    if text.isascii() and text.isprintable():
        return text
    s = _shown(text, one_line=False)
    if any(unicodedata.bidirectional(ch) in _RTL_CLASSES for ch in s):
        s = FSI + s + PDI
    return s


def needs_escape(ch: str) -> bool:
    """True for a character `for_page` and `for_terminal` show as an escape (ZWJ included:
    taken alone it is not known to join two emoji)."""
    return _kind(ch) in ("format", "control", "unassigned")


def json_for_terminal(obj: Any, **kw: Any) -> str:
    """json.dumps(obj, ensure_ascii=False, **kw), except that every character a terminal would
    obey or hide (format, control, unassigned, surrogate, U+2028/2029) is written as its \\u
    escape: the same JSON value, safe to print, and other text stays readable."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    if text.isascii():
        return text
    return "".join(json.dumps(ch)[1:-1] if _kind(ch) else ch for ch in text)


def printable(text: object, limit: int | None = None) -> str:
    """Compact: controls, format characters (bidi overrides, zero-width; ZWJ kept) and
    unassigned/surrogate code points replaced by U+FFFD; whitespace runs (tabs, newlines)
    folded to one space; cut to `limit` characters with '…'."""
    out: list[str] = []
    for ch in str(text):
        kind = _kind(ch)
        if (kind == "format" and ch != ZWJ) or kind in ("control", "surrogate", "unassigned"):
            ch = " " if ch in _LINE_BREAKS else REPLACEMENT
        elif kind == "separator":
            ch = " "
        if ch == " " and out and out[-1] == " ":
            continue
        out.append(ch)
    return _cut("".join(out), limit)
