"""Untrusted text (vendor names, items, currencies, reasons) made safe to show a person.

Why: a vendor controls these strings. Printed raw, `ESC[2J` clears the person's terminal, NUL
and C1 controls confuse it, and U+202E (right-to-left override) makes "gpj.exe" read as
"exe.jpg". Every renderer of vendor text (the CLI, the box's screen, the phone app) passes it
through `printable` first.
"""
from __future__ import annotations

import unicodedata

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
# Unicode's bidirectional formatting characters (UAX #9): embeddings, overrides, isolates, marks.
BIDI_CONTROLS = frozenset("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object, limit: int | None = None) -> str:
    """Controls, bidi overrides and unassigned/surrogate code points replaced by U+FFFD;
    whitespace runs (tabs, newlines) folded to one space; cut to `limit` characters with '…'."""
    out: list[str] = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        if ch in BIDI_CONTROLS or cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch != "\u200d"):
            if ch in "\t\n\r\x0b\x0c":
                ch = " "
            else:
                ch = REPLACEMENT
        elif cat in ("Zl", "Zp"):
            ch = " "
        if ch == " " and out and out[-1] == " ":
            continue
        out.append(ch)
    s = "".join(out)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s
