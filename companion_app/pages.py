"""How a page talks to the box: reads that degrade to "the daemon is not running", changes whose
refusals become a message for the person, and held requests shown plainly.

Why one place: every blueprint needs the same three outcomes (done, refused with a reason, box
down), and the person must see the same words for each on every page.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import current_app, flash, g, request, session

from .box import DOWN_MESSAGE, HELD, Box, BoxDown, BoxRefused
from .readcache import ReadCache

log = logging.getLogger(__name__)


def box() -> Box:
    return current_app.config["BOX"]


def reads() -> ReadCache:
    return current_app.extensions["vrmbox_reads"]


def read(op: str, args: dict[str, Any] | None = None, default: Any = None) -> Any:
    """A read for a page: on failure the page still renders (banner, or the refusal flashed)."""
    try:
        return reads().call(op, args)
    except BoxDown:
        g.box_down = True
        return default
    except BoxRefused as exc:
        flash(str(exc), "error")
        return default


def cached_page(name: str, render: Any) -> str:
    """A read-only page for this phone, reused until the box reports a change (readcache.py).
    Never when a message is waiting to be shown (flashes are once-only) or the box is down."""
    phone = g.get("phone")
    if not phone or session.get("_flashes"):
        return render()
    # the page holds this session's CSRF token: one entry per phone and session token
    key = f"{phone['phone']}:{session.get('csrf_token', '')}:{name}:{request.full_path}"
    return reads().page(key, render)


def held_message(result: Any) -> str | None:
    """The words for a request the box holds until its button is long-pressed, else None."""
    if isinstance(result, dict) and result.get("status") == HELD:
        what = result.get("what") or "approve this change"
        return (f"Waiting for the box: press and hold the button on the box to {what} "
                f"(request {result.get('request', '?')}). Nothing has changed yet.")
    return None


def change(op: str, args: dict[str, Any] | None = None, done: str | None = None) -> tuple[bool, Any]:
    """A change asked of the box; (True, result) when the box took it (done or held)."""
    try:
        result = box().call(op, args)
    except BoxDown:
        g.box_down = True
        flash(f"Not done: {DOWN_MESSAGE}.", "error")
        return False, None
    except BoxRefused as exc:
        flash(f"Not done: {exc}", "error")
        return False, None
    finally:
        reads().invalidate()     # the next page shows the change even before the box's event
    held = held_message(result)
    if held:
        flash(held, "held")
    elif done:
        flash(done, "ok")
    return True, result


def back(default: str) -> str:
    """Where to go after a form: the form's own `next` when it is a path on this site."""
    nxt = request.form.get("next", "")
    if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt and len(nxt) < 300:
        return nxt
    return default
