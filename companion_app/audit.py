"""The audit log: paged, filterable by event type, with the result of `verify` at the top."""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, render_template, request

from .pages import read

log = logging.getLogger(__name__)

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE = 50
_TYPE = re.compile(r"^[a-z0-9_]{1,64}$")


def page_args(args: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Query string -> audit op args, or errors (pure)."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {"limit": PAGE, "offset": 0}
    page = args.get("page", "1")
    if not page.isdigit() or not 1 <= int(page) <= 1_000_000:
        errors["page"] = "a page number"
    else:
        out["offset"] = (int(page) - 1) * PAGE
    kind = args.get("type", "")
    if kind:
        if _TYPE.match(kind):
            out["type"] = kind
        else:
            errors["type"] = "an event type is lower-case letters, digits and '_'"
    return out, errors


def entries_of(result: Any) -> tuple[list[dict[str, Any]], int | None]:
    if isinstance(result, dict):
        return list(result.get("entries") or []), result.get("total")
    return (list(result) if isinstance(result, list) else []), None


@bp.route("/")
def index() -> Any:
    args, errors = page_args(request.args)
    page_no = args["offset"] // PAGE + 1
    if errors:
        return render_template("audit.html", entries=[], total=None, verify=None, errors=errors,
                               page=1, kind="", page_size=PAGE), 400
    # newest first: page 1 is the last PAGE entries of the log
    _, total = entries_of(read("audit", {"offset": 0, "limit": 1}, None))
    if total is not None:
        end = max(0, total - args["offset"])
        args = {**args, "offset": max(0, end - PAGE), "limit": max(1, min(PAGE, end))}
    entries, _ = entries_of(read("audit", args, None)) if total else ([], None)
    entries.reverse()
    return render_template("audit.html", entries=entries, total=total, verify=read("audit_verify", {}, None),
                           errors={}, page=page_no, kind=args.get("type", ""),
                           page_size=PAGE)
