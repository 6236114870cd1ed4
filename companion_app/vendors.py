"""Vendors: who has been seen, their profile, key history and key-change warnings; allow /
block / trust, and accept a changed key (held by the box until its button is pressed).

Blocking takes the vendor's offers out of every ranking on the box at once and the box refuses
to accept or confirm with it (device/market.py); its agreements still waiting for the box's
button are cancelled from here, next to the block, so nothing of it is left half-done."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from device.records import VENDOR_STATUSES

from .inputs import form_errors, summary
from .pages import change, read

log = logging.getLogger(__name__)

bp = Blueprint("vendors", __name__, url_prefix="/vendors")

STATUSES = VENDOR_STATUSES


@bp.route("/")
def index() -> Any:
    agreements = read("agreements", {}, []) or []
    vendors = read("vendors", {}, []) or []
    return render_template("vendors.html", vendors=vendors, agreements=agreements, statuses=STATUSES,
                           waiting={v.get("vendor"): len(waiting_for(v.get("vendor"), agreements))
                                    for v in vendors})


@bp.route("/<vendor>/status", methods=["POST"])
def status(vendor: str) -> Any:
    if errors := form_errors(request.form, ("status",)):
        return render_template("error.html", status=400, message=summary(errors)), 400
    value = request.form.get("status", "")
    if value not in STATUSES:
        return render_template("error.html", status=400,
                               message=f"status must be one of {', '.join(STATUSES)}"), 400
    done = f"{vendor} is now {value}."
    if value == "blocked":
        done += " Its offers are no longer ranked and cannot be accepted."
    ok, result = change("vendor_status", {"vendor": vendor, "status": value}, done=done)
    waiting = result.get("pending_agreements") if ok and isinstance(result, dict) else None
    if value == "blocked" and waiting:
        flash(f"{len(waiting)} agreement{'s' if len(waiting) != 1 else ''} with {vendor} still "
              "wait for the box's button: cancel them below.", "held")
    return redirect(url_for(".index"))


def waiting_for(vendor: str, agreements: list[dict[str, Any]]) -> list[str]:
    """The vendor's agreements waiting for the box's button (nothing sent yet)."""
    return [str(a.get("agreement")) for a in agreements
            if a.get("vendor") == vendor and a.get("status") == "pending_confirmation"]


@bp.route("/<vendor>/cancel-pending", methods=["POST"])
def cancel_pending(vendor: str) -> Any:
    """Cancel every agreement with this vendor that still waits for the box's button."""
    waiting = waiting_for(vendor, read("agreements", {}, []) or [])
    if not waiting:
        flash(f"No agreement with {vendor} waits for the box.", "ok")
        return redirect(url_for(".index"))
    cancelled = sum(change("cancel", {"agreement": a})[0] for a in waiting)
    if cancelled:
        flash(f"{cancelled} agreement{'s' if cancelled != 1 else ''} with {vendor} cancelled; "
              "nothing was sent.", "ok")
    log.info("cancelled %d of %d waiting agreements with %s", cancelled, len(waiting), vendor)
    return redirect(url_for(".index"))


@bp.route("/<vendor>/accept-key", methods=["POST"])
def accept_key(vendor: str) -> Any:
    if errors := form_errors(request.form, ("did",)):
        return render_template("error.html", status=400, message=summary(errors)), 400
    did = request.form.get("did", "")
    if not did.startswith("did:key:") or len(did) > 200:
        return render_template("error.html", status=400, message="that is not a vendor key (did:key:...)"), 400
    change("vendor_accept_key", {"vendor": vendor, "did": did}, done=f"{vendor}'s new key accepted.")
    return redirect(url_for(".index"))
