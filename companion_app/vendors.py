"""Vendors: who has been seen, their profile, key history and key-change warnings; allow /
block / trust, and accept a changed key (held by the box until its button is pressed)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from device.records import VENDOR_STATUSES

from .inputs import form_errors, summary
from .pages import change, read

log = logging.getLogger(__name__)

bp = Blueprint("vendors", __name__, url_prefix="/vendors")

STATUSES = VENDOR_STATUSES


@bp.route("/")
def index() -> Any:
    return render_template("vendors.html", vendors=read("vendors", {}, []) or [],
                           agreements=read("agreements", {}, []) or [], statuses=STATUSES)


@bp.route("/<vendor>/status", methods=["POST"])
def status(vendor: str) -> Any:
    if errors := form_errors(request.form, ("status",)):
        return render_template("error.html", status=400, message=summary(errors)), 400
    value = request.form.get("status", "")
    if value not in STATUSES:
        return render_template("error.html", status=400,
                               message=f"status must be one of {', '.join(STATUSES)}"), 400
    change("vendor_status", {"vendor": vendor, "status": value}, done=f"{vendor} is now {value}.")
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
