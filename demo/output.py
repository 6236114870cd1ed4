"""What the demo shows: the running line of events, the terminal panel below the UI's picture,
and the summary read from the box at the end. Every value from the box or a vendor is vendor
text, shown through device.textsafe.for_terminal."""
from __future__ import annotations

import os
import shutil
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from device.textsafe import for_terminal as shown


# ============================================================================ pure: the figures
def summarise(ranked: list[dict[str, Any]], every: list[dict[str, Any]], rejections: list[dict[str, Any]],
              agreements: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary from the box's own answers (`vrmbox offers|rejections|agreements --json`)."""
    rejected: dict[str, int] = {}
    for r in rejections:
        rejected[r["reason"]] = rejected.get(r["reason"], 0) + int(r["count"])
    by_status: dict[str, int] = {}
    for a in agreements:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    return {
        "offers_ranked": len(ranked),
        "offers_received": len(every),
        "offers_filtered_out": sum(1 for o in every if not o.get("eligible")),
        "rejected": dict(sorted(rejected.items())),
        "rejected_by_vendor": [{"reason": r["reason"], "vendor": r["vendor"], "count": r["count"]}
                               for r in rejections],
        "agreements": len(agreements),
        "agreements_by_status": dict(sorted(by_status.items())),
        "top_offers": [{k: o.get(k) for k in ("vendor", "item", "price", "currency", "score", "intent")}
                       for o in ranked[:5]],
    }


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"vrmbox demo: stopped ({s.get('stopped_by')}) after {s.get('ran_s', 0):.0f} s",
             f"  offers ranked     {s.get('offers_ranked', '?')}  (received {s.get('offers_received', '?')}, "
             f"filtered out by your rules {s.get('offers_filtered_out', '?')})"]
    for o in s.get("top_offers", [])[:3]:   # vendor text: escapes for bidi and control characters
        lines.append(f"      {shown(o['vendor'])}: {shown(o['item'])} {shown(o['price'])} "
                     f"{shown(o['currency'])}  score {o['score']:.3f}")
    rejected = s.get("rejected", {})
    lines.append("  rejected          " + (", ".join(f"{k} {v}" for k, v in rejected.items()) or "none"))
    lines.append(f"  agreements        {s.get('agreements', '?')}"
                 + (f"  ({', '.join(f'{k} {v}' for k, v in s.get('agreements_by_status', {}).items())})"
                    if s.get("agreements") else ""))
    for w in s.get("warnings", []):
        lines.append(f"  warning: {w}")
    for e in s.get("errors", []):
        lines.append(f"  error: {e}")
    if s.get("kept"):
        lines.append(f"  data kept in {s['data_dir']}")
    return "\n".join(lines)


@dataclass
class Tally:
    """What the running line shows (the summary is read from the box, not from this)."""

    offers: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    agreements: int = 0

    def line(self) -> str:
        rej = sum(self.rejected.values())
        detail = f" ({', '.join(f'{k} {v}' for k, v in sorted(self.rejected.items()))})" if rej else ""
        return f"[offers {self.offers} | rejected {rej}{detail} | agreements {self.agreements}]"


def event_line(event: dict[str, Any], tally: Tally) -> str | None:
    """Update the tally with one daemon event; the text to show, or None for events not shown.
    Every value from the event is vendor text, shown through device.textsafe.for_terminal
    (bidi and control characters as <U+202E> escapes, one line)."""
    kind = event.get("type")
    v = {k: shown(event.get(k)) for k in ("vendor", "item", "price", "currency", "category", "reason")}
    if kind == "offer":
        tally.offers += 1
        where = (f"#{shown(event['position'])} for {v['category']}" if event.get("eligible")
                 else f"filtered out ({v['category']})")
        text = f"offer    {v['vendor']}: {v['item']} {v['price']} {v['currency']}  {where}"
    elif kind == "rejected":
        reason = str(event.get("reason"))
        tally.rejected[reason] = tally.rejected.get(reason, 0) + 1
        text = f"REFUSED  {v['reason']}" + (f" (in the name of {v['vendor']})" if event.get("vendor") else "")
    elif kind == "agreement_active":
        tally.agreements += 1
        text = f"agreement with {v['vendor']} is active: data sent encrypted to that vendor only"
    elif kind in ("vendor_new", "vendor_key_changed"):
        text = f"vendor   {v['vendor']} " + ("introduced itself (key pinned)" if kind == "vendor_new"
                                            else "published a NEW key: flagged, not accepted")
    elif kind == "revocation_acknowledged":
        text = f"revoked  {v['vendor']} confirmed deletion"
    else:
        return None
    return text


# ============================================================================ pure: terminal panel
def panel_top(cols: int, rows: int, width: int = 128, height: int = 64, scale: int = 2) -> int | None:
    """First terminal row free below luma's asciiblock picture (it scales the display, doubled
    by scale2x, to the terminal's width, two pixels per row), or None if fewer than 6 rows remain."""
    art_rows = (height * scale * cols // (width * scale)) // 2
    top = art_rows + 2
    return top if rows - top >= 6 else None


def panel_bytes(top: int, lines: Iterable[str], cols: int) -> bytes:
    """Redraw our lines below the picture in one write that saves and restores the cursor, so
    the UI process drawing at the top is not disturbed."""
    out = ["\x1b7"]
    for i, line in enumerate(lines):
        out.append(f"\x1b[{top + i};1H\x1b[2K{line[:cols - 1]}")
    out.append("\x1b8")
    return "".join(out).encode("utf-8", "replace")


class Output:
    """Human text: to stderr (stdout carries only the summary, or the JSON object with --json).
    With the UI drawing in the terminal, the lines go to a panel below its picture: a few
    pinned lines (how to reach the box), then the latest events."""

    def __init__(self, panel: int | None = None) -> None:
        self.panel = panel
        self.pinned: list[str] = []
        self.status = ""
        self.lines: deque[str] = deque(maxlen=1)
        self.cols, self.rows = shutil.get_terminal_size()

    def pin(self, lines: list[str]) -> None:
        if self.panel is None:
            self.say("\n".join(lines))
            return
        self.pinned = lines
        self.lines = deque(maxlen=max(1, self.rows - self.panel - len(lines)))   # one row: the status
        self._draw()

    def event(self, text: str, status: str) -> None:
        """One event; `status` (the running tally) follows it, or has a row of its own in the panel."""
        if self.panel is None:
            self.say(f"{text:<64} {status}")
            return
        self.status = status
        self.say(text)

    def say(self, text: str = "") -> None:
        if self.panel is None:
            print(text, file=sys.stderr, flush=True)
            return
        self.lines.extend(text.split("\n"))
        self._draw()

    def _draw(self) -> None:
        assert self.panel is not None
        os.write(sys.stdout.fileno(), panel_bytes(self.panel, [*self.pinned, self.status, *self.lines], self.cols))

