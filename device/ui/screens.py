"""Screens: state -> a drawing on a PIL ImageDraw (luma's `canvas` gives one). Pure.

Why one font and fixed rows: the OLED is 128 pixels wide; PIL's built-in bitmap font (6x8 ink,
Latin-1) renders identically everywhere, so golden frames compare pixel for pixel. Every piece
of vendor text goes through text.clean + fit/wrap: it truncates with an ellipsis or scrolls,
never overflows. Each screen fits 128x64 (6 body rows) and 128x32 (2 body rows).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

import segno
from PIL import Image, ImageDraw, ImageFont

from .state import MENU, OFFER_ACTIONS, State
from .text import clean, fit, money, number, wrap

log = logging.getLogger(__name__)

HEADER_H = 10
ROW_H = 9
INK_TOP = 3          # the bitmap font's glyphs start 3 px below the origin
MARGIN = 1
ARROW_W = 5          # room at the right of scrolling text for the more-above/below arrow


@lru_cache(maxsize=1)
def font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()


@dataclass(frozen=True)
class Canvas:
    """Where to draw: a PIL ImageDraw of width x height, and the clock for 'how long ago'."""
    draw: ImageDraw.ImageDraw
    width: int
    height: int
    now: float

    @property
    def rows(self) -> int:
        return (self.height - HEADER_H) // ROW_H

    def row_y(self, i: int) -> int:
        return HEADER_H + i * ROW_H

    def text(self, x: int, y: int, s: str, fill: int = 1, height: int = ROW_H) -> None:
        """Text whose ink is clipped to the row from y to y+height: no glyph can reach
        into the next row, whatever a vendor wrote."""
        if not s:
            return
        w = max(1, min(self.width - x, int(font().getlength(s)) + 1))
        mask = Image.new("1", (w, height), 0)
        ImageDraw.Draw(mask).text((0, 1 - INK_TOP), s, font=font(), fill=1)
        self.draw.bitmap((x, y), mask, fill=fill)

    def line(self, i: int, s: str, inverted: bool = False, right: str = "") -> None:
        """Body row i: clean-and-fit text, optional right-aligned part, optional highlight."""
        y, f = self.row_y(i), font()
        right = clean(right)
        rw = int(f.getlength(right)) + (2 if right else 0)
        if inverted:
            self.draw.rectangle((0, y, self.width - 1, y + ROW_H - 1), fill=1)
        self.text(MARGIN, y, fit(s, f, self.width - 2 * MARGIN - rw), fill=0 if inverted else 1)
        if right:
            self.text(self.width - MARGIN - rw + 2, y, right, fill=0 if inverted else 1)

    def header(self, title: str, right: str = "") -> None:
        self.draw.rectangle((0, 0, self.width - 1, HEADER_H - 1), fill=1)
        right = clean(right)
        rw = int(font().getlength(right))
        self.text(MARGIN, 0, fit(clean(title), font(), self.width - 2 * MARGIN - rw - 3), fill=0)
        if right:
            self.text(self.width - MARGIN - rw, 0, right, fill=0)

    def footer(self, s: str) -> None:
        """A hint or notice on the last row, highlighted (it covers that row)."""
        self.line(self.rows - 1, clean(s), inverted=True)


def ago(ts: Any, now: float) -> str:
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "never"
    s = max(0, int(now - ts))
    return f"{s}s ago" if s < 60 else f"{s // 60}m ago" if s < 3600 else \
        f"{s // 3600}h ago" if s < 86400 else f"{s // 86400}d ago"


def left(ts: Any, now: float) -> str:
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "?"
    s = int(ts - now)
    if s <= 0:
        return "expired"
    return f"{s // 60}m left" if s < 3600 else f"{s // 3600}h left" if s < 2 * 86400 else f"{s // 86400}d left"


def _list(c: Canvas, rows: list[tuple[str, str]], cursor: int, reserve: int = 0) -> None:
    """Rows of (left, right) text with the cursor row highlighted, scrolled to keep it seen."""
    visible = max(1, c.rows - reserve)
    first = max(0, min(cursor - visible + 1, len(rows) - visible)) if cursor >= visible else 0
    for i, (l, r) in enumerate(rows[first:first + visible]):
        c.line(i, l, inverted=first + i == cursor, right=r)


def _scrolled(c: Canvas, lines: list[str], scroll: int, reserve: int = 1) -> None:
    """Lines from `scroll` on; a small arrow at the right edge says more is above / below."""
    visible = max(1, c.rows - reserve)
    start = min(scroll, max(0, len(lines) - visible))
    shown = lines[start:start + visible]
    for i, s in enumerate(shown):
        c.line(i, fit(s, font(), c.width - 2 * MARGIN - ARROW_W))
    x = c.width - 4
    if start > 0:                                           # more above: a small up arrow
        y = c.row_y(0) + 1
        c.draw.polygon([(x, y + 3), (x + 3, y + 3), (x + 1.5, y)], fill=1)
    if start + visible < len(lines):                        # more below: a small down arrow
        y = c.row_y(len(shown) - 1) + ROW_H - 5
        c.draw.polygon([(x, y), (x + 3, y), (x + 1.5, y + 3)], fill=1)


def _wrapped(c: Canvas, *parts: str) -> list[str]:
    out: list[str] = []
    for p in parts:
        out += wrap(clean(p, 600), font(), c.width - 2 * MARGIN - ARROW_W) or [""]
    return out


# ------------------------------------------------------------------------------ the screens
def pairing_alert(p: Mapping[str, Any], rows: int) -> list[str]:
    """Wrong pairing codes against the live code, for the status screen: strangers' guesses and
    lockouts are seen on the box itself (nothing when the code is clean or gone). A fresh code
    from the pair screen ends them (device/pairing.py)."""
    code, wrong = p.get("code"), p.get("failures")
    locked = p.get("clients_locked") if isinstance(p.get("clients_locked"), int) else 0
    if code == "spent":
        return ["! pair code spent,", "  Pair phone again"] if rows >= 5 else ["! pair code spent"]
    if code != "active" or not isinstance(wrong, int) or isinstance(wrong, bool) or wrong <= 0:
        return []
    if rows < 5:                          # 128x32: one row
        return [f"! pair {wrong} wrong" + (f" {locked} lock" if locked else "")]
    return [f"! pairing: {wrong} wrong"] + ([f"  {locked} device{'s' if locked != 1 else ''} locked"]
                                          if locked else [])


def status(s: State, c: Canvas) -> None:
    st = s.data.status
    pend = len(s.data.pending)
    alert = pairing_alert(s.data.pairing, c.rows)
    c.header("VRM box", "ok" if st.get("connected") else "!")
    live = st.get("live_intents")
    live = live if isinstance(live, int) else sum(1 for i in s.data.intents if i.get("status") == "active")
    rejected = st.get("rejected_total")
    broker = ["broker connected"] if st.get("connected") else ["broker unreachable,", " retrying"]
    lines = ([f"! {pend} waits: SELECT"] if pend else []) + alert + broker + [
        f"intents: {live} live", f"new matches: {s.new_matches()}",
        f"last offer: {ago(st.get('last_offer_at'), c.now)}",
        f"rejected: {rejected if isinstance(rejected, int) else '?'}"]
    if c.rows < 5:                         # 128x32: the same facts, two to a row
        net = "net ok" if st.get("connected") else "broker down"
        lines = ([f"! {pend} waits: SELECT"] if pend else []) + alert + [
            f"{net} {live} live {s.new_matches()} new",
            f"last {ago(st.get('last_offer_at'), c.now)} rej {rejected if isinstance(rejected, int) else '?'}"]
    for i, line in enumerate(lines[:c.rows]):
        c.line(i, line, inverted=line.startswith("!"))


def menu(s: State, c: Canvas) -> None:
    c.header("Menu")
    counts = {"matches": len(s.data.offers), "pending": len(s.data.pending),
              "agreements": len(s.data.agreements),
              "intents": sum(1 for i in s.data.intents if i.get("status") == "active")}
    _list(c, [(label, str(counts[k]) if k in counts else "") for k, label in MENU], s.cursor % len(MENU))


def matches(s: State, c: Canvas) -> None:
    offers = s.data.offers
    c.header("Matches", f"{min(s.cursor + 1, len(offers))}/{len(offers)}" if offers else "")
    if not offers:
        c.line(0, "no matches yet" if "offers" in s.data.loaded else "loading...")
        return
    rows = []
    for i, o in enumerate(offers):
        rows.append((f"{i + 1} {clean(o.get('vendor'), 60)}", money(o.get("price"), o.get("currency"))))
    cur = min(s.cursor, len(offers) - 1)
    _list(c, rows, cur, reserve=1)
    o = offers[cur]
    c.footer(f"score {number(o.get('score'))} {clean(o.get('item'), 80)}")


def _terms(o: Mapping[str, Any]) -> str:
    if isinstance(o.get("terms_accepted"), bool):
        return "accepted" if o["terms_accepted"] else "NOT accepted"
    exp = o.get("explanation") or {}
    failed = [str(f) for f in exp.get("failed") or []]
    if "require_terms_accepted" in (exp.get("passed") or []):
        return "accepted"
    if any(f.startswith("require_terms_accepted") for f in failed):
        return "NOT accepted"
    return "not checked"


def why(o: Mapping[str, Any]) -> list[str]:
    """The top explanation contributions (biggest first), then failed filters."""
    exp = o.get("explanation") or {}
    contrib = exp.get("contributions") or {}
    items = sorted(((clean(k, 40), v) for k, v in contrib.items() if isinstance(v, (int, float))),
                   key=lambda kv: -abs(kv[1]))
    lines = [f"{k} {'+' if v >= 0 else ''}{number(v)}" for k, v in items[:4]]
    lines += [f"x {clean(f, 120)}" for f in (exp.get("failed") or [])[:3]]
    return lines or ["no preferences set"]


def detail(s: State, c: Canvas) -> None:
    o = s.offer_row(s.offer)
    if o is None:
        c.header("Offer")
        c.line(0, "offer no longer open")
        return
    rank = next((i + 1 for i, x in enumerate(s.data.offers) if x.get("offer") == s.offer), 0)
    c.header(f"#{rank} {clean(o.get('vendor'), 60)}")
    lines = _wrapped(c, str(clean(o.get("item"), 300) or "(no item name)"))
    lines += [money(o.get("price"), o.get("currency")), f"valid: {left(o.get('valid_until'), c.now)}",
              f"terms: {_terms(o)}", f"score {number(o.get('score'))}, why:"]
    lines += why(o)
    _scrolled(c, lines, s.scroll)
    c.footer("SELECT: act  v: more")


def actions(s: State, c: Canvas) -> None:
    o = s.offer_row(s.offer) or {}
    c.header(clean(o.get("vendor"), 60) or "Offer")
    _list(c, [(label, "") for _, label in OFFER_ACTIONS], s.cursor % len(OFFER_ACTIONS))


READ_ALL = "v read all, then hold"


def accept(s: State, c: Canvas) -> None:
    p = s.data.preview
    days = (p or {}).get("duration_days")
    if p is None:
        c.header("Accept: send?")
        c.line(0, "not available on this box" if "accept_preview" in s.data.unavailable else "loading...")
        c.footer("BACK: nothing is sent")
        return
    # the recipient stays in the header, whatever is scrolled below it
    c.header(f"to {clean(p.get('vendor'), 120)}", f"{days} days" if isinstance(days, int) else "")
    _scrolled(c, consent_lines(c, "Send", p), s.scroll)
    c.footer(s.notice or ("hold SELECT to send" if read_to_end(s, c.width, c.height) else READ_ALL))


def consent_lines(c: Canvas, lead: str, item: Mapping[str, Any]) -> list[str]:
    """What would be released, to whom, why and for how long. The vendor's name gets one line
    (cut with an ellipsis), so a long name cannot push the purpose and duration out of sight."""
    fields = ", ".join(clean(f, 40) for f in item.get("fields") or []) or "nothing"
    days = item.get("duration_days")
    w = c.width - 2 * MARGIN - ARROW_W
    return (_wrapped(c, f"{lead} {fields}") + [fit(f"to {clean(item.get('vendor'), 120)}", font(), w)]
            + _wrapped(c, f"purpose: {clean(item.get('purpose'), 200)}",
                       f"kept {days if isinstance(days, int) else '?'} days"))


def pending_lines(c: Canvas, item: Mapping[str, Any]) -> list[str]:
    who = clean(item.get("requested_by"), 60) or "someone"
    if item.get("kind") == "agreement":
        return _wrapped(c, f"{who} wants to") + consent_lines(c, "send", item)
    return _wrapped(c, f"{who} asks: {clean(item.get('what') or item.get('op'), 200)}")


def pending(s: State, c: Canvas) -> None:
    items = s.data.pending
    item = s.pending_item()
    count = f"{min(s.cursor + 1, len(items))}/{len(items)}" if items else ""
    if item is not None and item.get("kind") == "agreement":
        c.header(f"to {clean(item.get('vendor'), 120)}", count)      # the recipient always seen
    else:
        c.header("Waiting for you", count)
    if item is None:
        c.line(0, "nothing waits" if "pending" in s.data.loaded else
               "not available" if "pending" in s.data.unavailable else "loading...")
        return
    _scrolled(c, pending_lines(c, item), s.scroll)
    c.footer(s.notice or ("hold SELECT / tap: no" if read_to_end(s, c.width, c.height) else READ_ALL))


def consent_text(s: State, c: Canvas) -> list[str] | None:
    """The lines the accept or pending screen scrolls through; None when it shows none."""
    if s.screen == "accept":
        return consent_lines(c, "Send", s.data.preview) if s.data.preview is not None else None
    if s.screen == "pending":
        item = s.pending_item()
        return pending_lines(c, item) if item is not None else None
    return None


def scroll_end(s: State, width: int, height: int) -> int:
    """The scroll at which the consent text's last line is on screen (0 when it all fits).
    Navigation asks this before a long press may release anything: what goes to whom has
    then been on the screen, at 128x32 too, where a row shows one line at a time."""
    c = Canvas(ImageDraw.Draw(Image.new("1", (1, 1))), width, height, 0.0)
    lines = consent_text(s, c)
    return max(0, len(lines) - max(1, c.rows - 1)) if lines else 0


def read_to_end(s: State, width: int, height: int) -> bool:
    return s.scroll >= scroll_end(s, width, height)


def intents(s: State, c: Canvas) -> None:
    c.header("Intents")
    rows = []
    for kind, r in s.intent_rows():
        if kind == "preset":
            rows.append((f"+ {clean(r.get('name'), 60)}", "cast"))
        else:
            rows.append((f"- {clean(r.get('category'), 60)}", f"{r.get('offers', 0)} offers"))
    if not rows:
        c.line(0, "no presets, no intents")
        return
    _list(c, rows, s.cursor % len(rows))


AGREEMENT_LABELS = {"pending_confirmation": "to confirm", "confirmed": "sent, waiting",
                    "active": "active", "ended": "ended"}


def agreement_label(a: Mapping[str, Any]) -> str:
    if a.get("status") == "revoked":
        return "deleted" if a.get("revocation") == "acknowledged" else "deleting.."
    if a.get("status") == "confirmed" and a.get("overdue"):
        return "no reply"
    return AGREEMENT_LABELS.get(str(a.get("status")), clean(a.get("status"), 20))


def agreements(s: State, c: Canvas) -> None:
    items = s.data.agreements
    c.header("Agreements", str(len(items)) if items else "")
    if not items:
        c.line(0, "none yet" if "agreements" in s.data.loaded else "loading...")
        return
    _list(c, [(clean(a.get("vendor"), 60), agreement_label(a)) for a in items], min(s.cursor, len(items) - 1))


def ask(s: State, c: Canvas) -> None:
    c.header("Are you sure?")
    _scrolled(c, _wrapped(c, s.ask.prompt if s.ask else ""), 0)
    c.footer("SELECT yes  BACK no")


@lru_cache(maxsize=8)
def _qr_matrix(url: str) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(row) for row in segno.make(url, error="l", boost_error=False).matrix)


def qr_side(url: str, height: int) -> int:
    """The QR code's side in pixels, quiet zone included, at the biggest scale that fits
    `height` (up to 3); larger than `height` when even one pixel per module does not fit (a
    long host name at 128x32)."""
    n = len(_qr_matrix(url))
    return (n + 2) * max(1, min(height // (n + 2), 3))


def qr(c: Canvas, url: str, x0: int = 0) -> int:
    """Draw the URL as a QR code at the left, as big as fits; returns its width."""
    matrix = _qr_matrix(url)
    n = len(matrix)
    side = qr_side(url, c.height)
    scale = side // (n + 2)
    y0 = (c.height - side) // 2
    c.draw.rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=1)      # light quiet zone
    for r, row in enumerate(matrix):
        for col, dark in enumerate(row):
            if dark:
                x, y = x0 + (col + 1) * scale, y0 + (r + 1) * scale
                c.draw.rectangle((x, y, x + scale - 1, y + scale - 1), fill=0)
    return side


PAIRS_PER_ROW = 7     # "AB:CD:EF:01:23:45:67": 20 characters, the widest that leaves the arrow room
CERT_HINTS = ("v cert SHA-256", "v cert")     # the first that fits beside the QR code


def code_of(p: Mapping[str, Any] | None) -> str:
    """The daemon's one-time code as it formats it for a small screen ("48291 37465"), else as sent."""
    if not isinstance(p, Mapping):
        return ""
    return clean(p.get("display") or p.get("code"), 24)


def fingerprint_pairs(fp: str | None) -> list[str]:
    """The fingerprint's hex pairs, as cleaned text (the file is the box's, but it is a file)."""
    return [x for x in clean(fp, 200).split(":") if x]


def fingerprint_rows(fp: str | None) -> list[str]:
    """The certificate's SHA-256 ("AB:CD:...") as rows of whole pairs, so the person can tick
    them off against the browser's certificate page row by row."""
    pairs = fingerprint_pairs(fp)
    return [":".join(pairs[i:i + PAIRS_PER_ROW]) for i in range(0, len(pairs), PAIRS_PER_ROW)]


def _cert_visible(height: int) -> int:
    """Fingerprint rows on screen at once: at 128x64 all five and a footer, at 128x32 two."""
    rows = (height - HEADER_H) // ROW_H
    return rows - 1 if rows >= 5 else max(1, rows)


def pair_scroll_end(s: State, width: int, height: int) -> int:
    """How far DOWN goes on the pair screen: 0 is the code and QR, 1 on the certificate's
    fingerprint, scrolled further where it does not fit (128x32). 0 without a fingerprint."""
    rows = fingerprint_rows(s.cert_fingerprint)
    return 1 + max(0, len(rows) - _cert_visible(height)) if rows else 0


def _code_lines(code: str, w: int) -> list[str]:
    """The code in as few rows as fit beside the QR: one, or a label and the code, or a label and
    its two groups of five on rows of their own."""
    f = font()
    if f.getlength(f"Code {code}") <= w:
        return [f"Code {code}"]
    if f.getlength(code) <= w:
        return ["Code:", code]
    return ["Code:"] + code.split()


def pair_text(s: State, width: int, height: int) -> tuple[str, list[str]]:
    """What the code page of the pair screen shows: the URL drawn as a QR code ("" for none) and
    the text rows beside it (or across the screen). The code is the daemon's (`pair_code`); the
    URL is the config's (`pair_url`: the HTTPS address on an installed box, None on a
    development box, whose phone app is wherever `vrmbox companion` or the launcher started it)."""
    code, url = code_of(s.data.pair), clean(s.pair_url, 200)
    unavailable = "pair_code" in s.data.unavailable
    f, rows = font(), height // ROW_H
    has_cert = bool(fingerprint_rows(s.cert_fingerprint))
    if not code and not (url and unavailable):
        return "", []
    if not url:
        if rows >= 5:
            return "", (["Pair phone, code:", code, ""] +
                        wrap("Type it in the phone app, at the address vrmbox companion or the "
                             "launcher printed.", f, width - 2 * MARGIN))[:rows]
        return "", [f"code {code}", "phone app URL: see", "vrmbox companion"]
    drawn = qr_side(url, height) <= height
    x = qr_side(url, height) + 3 if drawn else MARGIN
    w = width - x - MARGIN
    head = _code_lines(code, w) if code else ["Scan to", "pair"] if drawn else ["Pair at"]
    hint = [next((h for h in CERT_HINTS if f.getlength(h) <= w), CERT_HINTS[-1])] if has_cert else []
    room = max(0, rows - len(head) - len(hint))
    body = head + (wrap(url, f, w, room) if room else [])
    # the hint to the fingerprint sits on the last row, below whatever the URL left free
    return url if drawn else "", (body + [""] * (rows - len(hint) - len(body)) + hint)[:rows]


def pair_cert_shown(s: State, height: int) -> tuple[int, list[str]]:
    """The fingerprint page at this scroll: the index of its first row and the rows on screen."""
    rows = fingerprint_rows(s.cert_fingerprint)
    visible = _cert_visible(height)
    start = min(max(0, s.scroll - 1), max(0, len(rows) - visible))
    return start, rows[start:start + visible]


def _pair_cert(s: State, c: Canvas) -> None:
    start, shown = pair_cert_shown(s, c.height)
    first = start * PAIRS_PER_ROW + 1
    # which pairs are on screen ("1-14"), so the person knows how many have been compared
    last = first - 1 + sum(len(r.split(":")) for r in shown)
    c.header("cert SHA-256", f"{first}-{last}")
    visible = _cert_visible(c.height)
    _scrolled(c, fingerprint_rows(s.cert_fingerprint), start, reserve=c.rows - visible)
    if c.rows > visible:
        c.footer("must match browser")


def pair(s: State, c: Canvas) -> None:
    if s.scroll > 0 and fingerprint_rows(s.cert_fingerprint):
        _pair_cert(s, c)
        return
    url, lines = pair_text(s, c.width, c.height)
    if not lines:
        c.header("Pair phone")
        if "pair_code" in s.data.unavailable:
            c.line(0, "pairing is not")
            c.line(1, "available yet")
        else:
            c.line(0, "loading...")
        return
    x = qr(c, url) + 3 if url else MARGIN
    f, w = font(), c.width - x - MARGIN
    for i, line in enumerate(lines):
        c.text(x, 1 + i * ROW_H, fit(line, f, w))


def offline(s: State, c: Canvas) -> None:
    c.header("VRM box", "!")
    lines = _wrapped(c, s.connection_detail or "box daemon not running, retrying")
    _scrolled(c, lines, 0, reserve=0)


SCREENS: dict[str, Callable[[State, Canvas], None]] = {
    "status": status, "menu": menu, "matches": matches, "detail": detail, "actions": actions,
    "accept": accept, "pending": pending, "intents": intents, "agreements": agreements,
    "ask": ask, "pair": pair, "offline": offline}


def render(state: State, draw: ImageDraw.ImageDraw, width: int, height: int, now: float) -> None:
    """Draw the state's screen (or the offline notice) onto `draw`."""
    c = Canvas(draw, width, height, now)
    screen = state.screen if state.connected else "offline"
    SCREENS.get(screen, status)(state, c)
    if state.notice and state.connected and screen not in ("accept", "pending"):
        c.footer(state.notice)


def frame(state: State, width: int, height: int, now: float, shift: tuple[int, int] = (0, 0)) -> Image.Image:
    """The whole frame as a 1-bit image, moved by `shift` pixels (burn-in care)."""
    img = Image.new("1", (width, height), 0)
    render(state, ImageDraw.Draw(img), width, height, now)
    if shift == (0, 0):
        return img
    out = Image.new("1", (width, height), 0)
    out.paste(img, shift)
    return out
