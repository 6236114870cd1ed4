"""How a page talks to the box: reads that degrade to "the daemon is not running", changes whose
refusals become a message for the person, and held requests shown plainly.

Why one place: every blueprint needs the same three outcomes (done, refused with a reason, box
down), and the person must see the same words for each on every page.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Response, abort, current_app, flash, g, render_template, request, session

from .box import DOWN_MESSAGE, HELD, Box, BoxDown, BoxRefused
from .inputs import form_errors, summary
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
    """A change asked of the box; (True, result) when the box took it (done or held). Never
    when the request holds a control character in any field (inputs.py: each page checks its
    own fields first, to say so next to the field; this is the net under them)."""
    if bad := form_errors(request.form):
        abort(Response(render_template("error.html", status=400, message=summary(bad)), status=400,
                       mimetype="text/html"))
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


# A path on this site and nothing else: one leading slash, then only URL characters (no
# backslash, no control character or space, no '#'), no '//' anywhere. Browsers drop a tab or a
# line break inside a URL, so "/<TAB>/evil.example" would become "//evil.example", another site.
SAME_SITE_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,299}")


def safe_next(value: Any) -> str | None:
    """`value` when it is a strict same-origin path (SAME_SITE_PATH), else None."""
    if isinstance(value, str) and SAME_SITE_PATH.fullmatch(value) and "//" not in value:
        return value
    return None


def back(default: str) -> str:
    """Where to go after a form: the form's own `next` when it is a strict same-origin path,
    else `default`. Ask for it before the change, so a bad `next` can never fail after it."""
    return safe_next(request.form.get("next", "")) or default
