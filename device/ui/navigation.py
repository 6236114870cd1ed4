"""Navigation: (state, event) -> (new state, requests to send). Pure.

The consent rule lives here: a request that releases data (`offer_accept` followed by
`confirm`, a pending `confirm`, an `approve`) is only ever produced by a *long* SELECT on the
accept or pending screen, and only if SELECT went down on that same screen for that same
agreement/offer (a screen that changed under a held button releases nothing), and only once
the person has scrolled the consent text to its end, so that what goes to whom has been on the
screen (at 128x32 a row shows one line at a time). Every other key on every other screen, and
any short press, produces no such request.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

from .screens import pair_scroll_end, scroll_end
from .state import (EVENT_READS, MENU, OFFER_ACTIONS, READS, SNOOZE_S, Ask, BoxEvent, Connection,
                    Data, Done, Event, Failed, Key, Loaded, Refresh, Request, State, pending_items,
                    target_of)

log = logging.getLogger(__name__)

Step = tuple[State, list[Request]]
_UNAVAILABLE_MARKERS = ("not available on this socket", "unknown operation")


def reads(ops: tuple[str, ...] | list[str], state: State) -> list[Request]:
    """Read requests for `ops`, skipping the ones this socket does not offer."""
    return [Request(op, {}, "read") for op in dict.fromkeys(ops) if op not in state.data.unavailable]


def _go(state: State, screen: str, **kw: Any) -> State:
    return replace(state, screen=screen, cursor=kw.pop("cursor", 0), scroll=kw.pop("scroll", 0),
                   armed=None, **kw)


def _mark_seen(state: State) -> State:
    if state.screen != "matches":
        return state
    return replace(state, seen=state.seen | {str(o.get("offer")) for o in state.data.offers})


def _rows(state: State) -> int:
    """How many rows the current list screen has (for cursor bounds)."""
    return {"menu": len(MENU), "matches": len(state.data.offers), "actions": len(OFFER_ACTIONS),
            "pending": len(state.data.pending), "intents": len(state.intent_rows()),
            "agreements": len(state.data.agreements)}.get(state.screen, 0)


def _target(state: State) -> str | None:
    """What a long SELECT on this screen would act on."""
    if state.screen == "accept":
        return state.offer
    if state.screen == "pending":
        return target_of(state.pending_item())
    return None


def _move(state: State, delta: int) -> State:
    if state.screen == "detail":
        return replace(state, scroll=max(0, state.scroll + delta))
    if state.screen == "accept":
        return replace(state, scroll=max(0, min(scroll_end(state, *state.size), state.scroll + delta)))
    if state.screen == "pair":      # DOWN from the code to the certificate's fingerprint
        return replace(state, scroll=max(0, min(pair_scroll_end(state, *state.size), state.scroll + delta)))
    n = _rows(state)
    if n == 0:
        return state
    if state.screen == "pending":
        # the selected item's text scrolls first; past its end (or its start) the next item
        if 0 <= state.scroll + delta <= scroll_end(state, *state.size):
            return replace(state, scroll=state.scroll + delta)
        if not 0 <= state.cursor + delta < n:
            return state                  # the first or last item: nowhere to go
        return replace(state, cursor=state.cursor + delta, scroll=0)
    return replace(state, cursor=(state.cursor + delta) % n)


def _back(state: State) -> Step:
    parent = {"menu": "status", "matches": "menu", "detail": "matches", "actions": "detail",
              "accept": "actions", "pending": "menu", "intents": "menu", "agreements": "menu",
              "pair": "menu"}
    if state.screen == "ask" and state.ask:
        return _go(state, state.ask.back, ask=None), []
    if state.screen in ("detail",):
        idx = next((i for i, o in enumerate(state.data.offers) if o.get("offer") == state.offer), 0)
        return _mark_seen(_go(state, "matches", cursor=idx)), []
    if state.screen == "accept":
        return _go(state, "actions", cursor=0, data=replace(state.data, preview=None)), []
    return _go(state, parent.get(state.screen, "status")), []


def _enter(state: State, screen: str) -> Step:
    new = _go(state, screen)
    if screen == "matches":
        return _mark_seen(new), reads(("offers",), state)
    if screen == "pair":
        if "pair_code" in state.data.unavailable:
            return new, []
        return replace(new, data=replace(new.data, pair=None)), [Request("pair_code", {}, "read")]
    if screen in ("pending", "intents", "agreements"):
        return new, reads({"pending": ("pending",), "intents": ("intents", "presets"),
                           "agreements": ("agreements",)}[screen], state)
    return new, []


def _select(state: State) -> Step:
    s = state.screen
    if s == "status":
        return _enter(state, "pending" if state.data.pending else "menu")
    if s == "menu":
        return _enter(state, MENU[state.cursor % len(MENU)][0])
    if s == "matches" and state.data.offers:
        offer = state.data.offers[min(state.cursor, len(state.data.offers) - 1)]
        return _go(state, "detail", offer=str(offer.get("offer"))), []
    if s == "detail" and state.offer:
        return _go(state, "actions"), []
    if s == "actions" and state.offer:
        action = OFFER_ACTIONS[state.cursor % len(OFFER_ACTIONS)][0]
        if action == "accept":
            new = _go(state, "accept", data=replace(state.data, preview=None))
            if "accept_preview" in state.data.unavailable:
                return new, []
            return new, [Request("accept_preview", {"offer": state.offer}, "read")]
        if action == "snooze":
            return replace(state, busy="offer_snooze"), [
                Request("offer_snooze", {"offer": state.offer, "seconds": SNOOZE_S}, "offer")]
        return replace(state, busy="offer_decline"), [Request("offer_decline", {"offer": state.offer}, "offer")]
    if s == "accept":
        return replace(state, notice="hold SELECT to send"), []
    if s == "pending":
        item = state.pending_item()
        if item is None:
            return state, []
        target = target_of(item)
        if item.get("kind") == "agreement":
            req, prompt = Request("cancel", {"agreement": target}, "pending"), "Cancel this? Nothing is sent."
        else:
            req, prompt = Request("deny", {"request": target}, "pending"), "Refuse this request?"
        return _go(state, "ask", ask=Ask(prompt, req, "pending")), []
    if s == "intents":
        rows = state.intent_rows()
        if not rows:
            return state, []
        kind, row = rows[state.cursor % len(rows)]
        if kind == "preset":
            return replace(state, busy="intent_preset"), [
                Request("intent_preset", {"name": str(row.get("name"))}, "intent")]
        req = Request("intent_withdraw", {"intent": str(row.get("intent"))}, "intent")
        return _go(state, "ask", ask=Ask(f"Withdraw {row.get('category')}?", req, "intents")), []
    if s == "ask" and state.ask:
        return _go(state, state.ask.back, ask=None, busy=state.ask.request.op), [state.ask.request]
    if s == "pair" and "pair_code" not in state.data.unavailable:
        return _enter(state, "pair")
    return state, []


def _long_select(state: State) -> Step:
    """The act of consent. Only here, and only when SELECT went down on this very screen and
    target, is anything released."""
    target = _target(state)
    if state.screen not in ("accept", "pending") or target is None:
        return state, []
    if state.armed != (state.screen, target):
        return replace(state, notice="screen changed: press and hold again"), []
    if state.busy:
        return replace(state, notice="busy, try again"), []
    preview = state.data.preview
    if state.screen == "accept" and (not preview or preview.get("offer") != target):
        return replace(state, notice="not ready: no agreement preview"), []
    if state.scroll < scroll_end(state, *state.size):
        return replace(state, notice="read it all first: v"), []
    if state.screen == "accept":
        assert preview is not None
        args: dict[str, Any] = {"offer": target, "fields": list(preview.get("fields") or [])}
        for k in ("purpose", "duration_days"):
            if preview.get(k) is not None:
                args[k] = preview[k]
        return (replace(state, busy="offer_accept", armed=None, notice="sending..."),
                [Request("offer_accept", args, "consent")])
    item = state.pending_item()
    assert item is not None
    req = (Request("confirm", {"agreement": target}, "consent") if item.get("kind") == "agreement"
           else Request("approve", {"request": target}, "consent"))
    return replace(state, busy=req.op, armed=None, notice="sending..."), [req]


def _key(state: State, key: Key) -> Step:
    if key.kind == "down":
        if key.role == "select":
            return replace(state, armed=(state.screen, _target(state))), []
        return state, []
    state = replace(state, notice=None) if state.notice != "sending..." else state
    role, long = key.role, key.kind == "long"
    if role == "home" or (role == "back" and long):
        return _go(state, "status", ask=None, data=replace(state.data, preview=None)), []
    if role == "select" and long:
        return _long_select(state)
    if long:                      # other long presses act like short ones
        key = Key(role, "short")
    if role == "up":
        return _move(state, -1), []
    if role == "down":
        return _move(state, +1), []
    if role in ("back", "left"):
        return _back(state)
    if role in ("select", "right"):
        return _select(state)
    return state, []


def _loaded(state: State, ev: Loaded) -> State:
    d, r = state.data, ev.result
    rows = lambda v: tuple(x for x in v if isinstance(x, Mapping)) if isinstance(v, list) else ()  # noqa: E731
    if ev.op == "status":
        d = replace(d, status=r if isinstance(r, Mapping) else {})
    elif ev.op in ("offers", "intents", "agreements", "presets"):
        d = replace(d, **{ev.op: rows(r)})
    elif ev.op == "pending":
        d = replace(d, pending=pending_items(r))
    elif ev.op == "pairing_status":
        d = replace(d, pairing=r if isinstance(r, Mapping) else {})
    elif ev.op == "pair_code":
        d = replace(d, pair=r if isinstance(r, Mapping) else None)
    elif ev.op == "accept_preview":
        if not (isinstance(r, Mapping) and r.get("offer") == state.offer):
            return state            # an answer for an offer no longer on screen
        d = replace(d, preview=r)
    d = replace(d, loaded=d.loaded | {ev.op})
    new = replace(state, data=d)
    if new.screen == "pending" and target_of(new.pending_item()) != target_of(state.pending_item()):
        new = replace(new, scroll=0)      # another item under the cursor: read it from its start
    n = _rows(new)
    if new.screen in ("matches", "pending", "intents", "agreements") and new.cursor >= max(n, 1):
        new = replace(new, cursor=max(0, n - 1))
    return _mark_seen(new)


def _done(state: State, ev: Done) -> Step:
    req, r = ev.request, ev.result
    state = replace(state, busy=None)
    if req.op == "offer_accept":
        agreement = r.get("agreement") if isinstance(r, Mapping) else None
        if not agreement:
            return replace(state, notice="the box did not make an agreement"), []
        return (replace(state, busy="confirm"),
                [Request("confirm", {"agreement": str(agreement)}, "consent")])
    if req.op in ("confirm", "approve"):
        target = str(req.args.get("agreement") or req.args.get("request"))
        new = replace(state, sent=state.sent + (f"{req.op}:{target}",),
                      notice="sent" if req.op == "confirm" else "approved")
        if new.screen == "accept":
            new = _go(new, "agreements", data=replace(new.data, preview=None))
        return new, reads(("offers", "agreements", "pending", "status"), state)
    if req.op in ("offer_decline", "offer_snooze"):
        new = _mark_seen(_go(state, "matches", offer=None,
                             notice="declined" if req.op == "offer_decline" else "snoozed for a day"))
        return new, reads(("offers", "status"), state)
    if req.op in ("intent_preset", "intent_withdraw"):
        new = replace(state, notice="intent cast" if req.op == "intent_preset" else "withdrawn")
        return new, reads(("intents", "status"), state)
    if req.op in ("cancel", "deny"):
        return replace(state, notice="cancelled" if req.op == "cancel" else "refused"), reads(("pending",), state)
    return state, []


def _failed(state: State, ev: Failed) -> Step:
    req, err = ev.request, ev.error
    if any(m in err for m in _UNAVAILABLE_MARKERS):
        state = replace(state, data=replace(state.data, unavailable=state.data.unavailable | {req.op}))
    if req.tag == "read":
        return state, []
    state = replace(state, busy=None, notice=err)
    if req.op == "confirm" and req.tag == "consent" and state.screen == "accept":
        # the agreement was made on this long press but not confirmed: drop it, nothing was sent
        return state, [Request("cancel", {"agreement": str(req.args.get("agreement"))}, "cleanup")]
    return state, []


def step(state: State, event: Event) -> Step:
    """The UI's one transition function."""
    if isinstance(event, Key):
        return _key(state, event)
    if isinstance(event, Loaded):
        return _loaded(state, event), []
    if isinstance(event, Done):
        return _done(state, event)
    if isinstance(event, Failed):
        return _failed(state, event)
    if isinstance(event, BoxEvent):
        kind = str(event.event.get("type", ""))
        ops = EVENT_READS.get(kind, ("offers",) if kind.startswith("vendor_") else ())
        new = replace(state, notice="something waits for your press") \
            if kind == "pending" and not state.busy else state
        return new, reads(ops, state)
    if isinstance(event, Connection):
        if event.up:
            new = replace(state, connected=True, connection_detail="")
            return new, reads(READS, new) if not state.connected else []
        return replace(state, connected=False, busy=None, connection_detail=event.detail), []
    if isinstance(event, Refresh):
        return state, reads(event.ops, state) if state.connected else []
    return state, []


def initial() -> State:
    return State(data=Data())
