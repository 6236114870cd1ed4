"""GET /events: the daemon's events as server-sent events, for a paired phone's pages
(static/live.js opens it), ending with the phone's session and with the server.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, g, stream_with_context
from flask import session as flask_session

from .box import BoxDown, BoxSlow
from .pages import box, reads
from .security import SESSION_KEY

log = logging.getLogger(__name__)

bp = Blueprint("stream", __name__)

STREAM_CHECK_S = 0.5          # how often an open stream asks the box whether its session holds
STREAM_CHECK_TIMEOUT_S = 0.8  # a check the box does not answer in this long ends the stream
STREAM_HEARTBEAT_S = 15.0     # a comment line when nothing else was sent (finds a gone client)
STREAM_EVENTS = ("offer", "changed", "agreement_active", "revocation_acknowledged",
                 "vendor_new", "vendor_key_changed")
# writes after which a session may have ended: checked at once, not at the next tick
SESSION_ENDING_OPS = frozenset({"phone_unpair", "erase"})


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _session_ending(event: dict[str, Any]) -> bool:
    return event.get("type") == "changed" and event.get("op") in SESSION_ENDING_OPS


@bp.route("/events")
def event_stream() -> Any:
    """GET /events: the daemon's events as server-sent events, for a paired phone (the gate
    let this request in). Why it checks on a clock and not on silence: a busy box is never
    silent, and an unpaired or expired phone must stop hearing it within 2 s. So the session is
    asked of the box at least every STREAM_CHECK_S, whatever flows, at once after a write that
    can end a session, and before relaying anything once a check is due; a check the box cannot
    answer within STREAM_CHECK_TIMEOUT_S closes the stream too (the browser reconnects after
    `retry`, through the gate, which asks the box again). Worst case after an unpair or expiry:
    STREAM_CHECK_S + STREAM_CHECK_S / 2 + STREAM_CHECK_TIMEOUT_S = 1.55 s."""
    sid = flask_session.get(SESSION_KEY)
    sessions = current_app.extensions["vrmbox_sessions"]
    check_s = float(current_app.config.get("STREAM_CHECK_S", STREAM_CHECK_S))
    timeout_s = float(current_app.config.get("STREAM_CHECK_TIMEOUT_S", STREAM_CHECK_TIMEOUT_S))
    heartbeat_s = float(current_app.config.get("SSE_HEARTBEAT_S", STREAM_HEARTBEAT_S))
    the_box, cache = box(), reads()
    phone_id = (g.get("phone") or {}).get("phone", "?")
    stopping: threading.Event = current_app.extensions["vrmbox_stopping"]

    def still_paired() -> bool:
        if not isinstance(sid, str):
            return False
        return sessions.phone(sid, fresh=True, timeout=timeout_s) is not None

    def stream() -> Iterator[str]:
        try:
            # woken at least twice per check period even when the box is silent
            source = the_box.events(idle_s=check_s / 2)
            yield "retry: 3000\n" + _sse("hello", {"live": True})
            now = time.monotonic()
            due, sent = now + check_s, now
            for event in source:
                if stopping.is_set():            # the server stops: end, the browser reconnects
                    return
                now = time.monotonic()
                if now >= due or (event is not None and _session_ending(event)):
                    try:
                        if not still_paired():
                            log.info("event stream of phone %s closed: no longer paired", phone_id)
                            yield _sse("unpaired", {})
                            return
                    except BoxSlow:
                        log.info("event stream of phone %s closed: the box did not confirm its "
                                 "session within %.1f s", phone_id, timeout_s)
                        return
                    now = time.monotonic()
                    due = now + check_s
                if event is None:
                    if now - sent >= heartbeat_s:
                        sent = now
                        yield ": keep-alive\n\n"
                    continue
                kind = str(event.get("type", "event"))
                if kind in STREAM_EVENTS:
                    # before the browser hears of it, so its re-fetch cannot get a cached answer
                    cache.invalidate()
                    sent = now
                    yield _sse(kind, {k: event.get(k) for k in ("type", "op", "intent", "vendor", "agreement")
                                      if k in event})
        except BoxDown:
            yield _sse("down", {})

    resp = Response(stream_with_context(stream()), mimetype="text/event-stream")
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
