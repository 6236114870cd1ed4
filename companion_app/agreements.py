"""Agreements: pending (waiting for the box's button, unless companion-only confirmation is on),
active, revoked and whether the vendor's deletion receipt has arrived; confirm, cancel, revoke."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from .inputs import form_errors
from .pages import change, read

log = logging.getLogger(__name__)

bp = Blueprint("agreements", __name__, url_prefix="/agreements")

MAX_REASON = 200
SECTIONS = (("pending_confirmation", "Waiting for the button on the box"),
            ("confirmed", "Confirmed, waiting for the vendor's signature"),
            ("active", "Active"), ("revoked", "Revoked"), ("ended", "Ended"))


def sections(agreements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agreements grouped by state, newest first within each (pure)."""
    out = []
    for status, title in SECTIONS:
        rows = sorted((a for a in agreements if a.get("status") == status),
                      key=lambda a: -(a.get("created_at") or 0))
        out.append({"status": status, "title": title, "rows": rows})
    return out


def _companion_only() -> bool:
    settings = read("settings", {}, None)
    return bool(isinstance(settings, dict) and settings.get("companion_only_confirmation"))


@bp.route("/")
def index() -> Any:
    return render_template("agreements.html", sections=sections(read("agreements", {}, []) or []),
                           companion_only=_companion_only(), highlight=request.args.get("highlight"),
                           errors={})


@bp.route("/fragment")
def fragment() -> Any:
    return render_template("_agreements.html", sections=sections(read("agreements", {}, []) or []),
                           companion_only=_companion_only(), highlight=None, errors={})


@bp.route("/<agreement_id>/confirm", methods=["POST"])
def confirm(agreement_id: str) -> Any:
    """Only works when companion-only confirmation is on; otherwise the box says to press it."""
    change("confirm", {"agreement": agreement_id}, done="Confirmed from the phone: agreement sent.")
    return redirect(url_for(".index"))


@bp.route("/<agreement_id>/cancel", methods=["POST"])
def cancel(agreement_id: str) -> Any:
    change("cancel", {"agreement": agreement_id}, done="Cancelled: nothing was sent.")
    return redirect(url_for(".index"))


@bp.route("/<agreement_id>/revoke", methods=["POST"])
def revoke(agreement_id: str) -> Any:
    if errors := form_errors(request.form, ("reason",)):
        shown = {f"reason_{agreement_id}": errors.get("reason") or errors["_form"], "_form": errors.get("_form", "")}
        return render_template("agreements.html", sections=sections(read("agreements", {}, []) or []),
                               companion_only=_companion_only(), highlight=agreement_id,
                               errors=shown), 400
    reason = (request.form.get("reason") or "").strip()[:MAX_REASON] or None
    change("revoke", {"agreement": agreement_id, "reason": reason},
           done="Revoked: the vendor has been asked to delete your data.")
    return redirect(url_for(".index"))
