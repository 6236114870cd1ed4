"""Settings: paired phones (unpair any), companion-only confirmation (off by default, with a
plain warning; turning it on waits for the box's button), export, and erase (the typed word and
a press on the box)."""
from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, session, url_for

from device.market import COMPANION_ONLY_SETTING

from .inputs import form_errors
from .pages import change, read
from .security import SESSION_KEY

log = logging.getLogger(__name__)

bp = Blueprint("settings", __name__, url_prefix="/settings")

ERASE_WORD = "ERASE"


def _page(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    settings = read("settings", {}, None)
    return render_template("settings.html", phones=read("phones", {}, []) or [],
                           settings=settings if isinstance(settings, dict) else {},
                           status=read("status", {}, None) or {}, errors=errors or {},
                           erase_word=ERASE_WORD), status


@bp.route("/")
def index() -> Any:
    return _page()


@bp.route("/phones/<phone_id>/unpair", methods=["POST"])
def unpair(phone_id: str) -> Any:
    ok, _ = change("phone_unpair", {"phone": phone_id}, done="Phone unpaired.")
    current_app.extensions["vrmbox_sessions"].forget()
    me = g.get("phone")
    if ok and me and me.get("phone") == phone_id:
        session.pop(SESSION_KEY, None)
        return redirect(url_for("auth.pair"))
    return redirect(url_for(".index"))


@bp.route("/companion-only", methods=["POST"])
def companion_only() -> Any:
    if errors := form_errors(request.form, ("value",)):
        return _page({"companion_only": errors.get("value") or errors["_form"], **errors}, 400)
    value = request.form.get("value")
    if value not in ("on", "off"):
        return _page({"companion_only": "choose on or off"}, 400)
    change("setting_set", {"key": COMPANION_ONLY_SETTING, "value": value == "on"},
           done=f"Companion-only confirmation is {value}.")
    return redirect(url_for(".index"))


@bp.route("/export", methods=["POST"])
def export() -> Any:
    ok, result = change("export", {})
    if not ok:
        return redirect(url_for(".index"))
    body = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    return Response(body, mimetype="application/json",
                    headers={"Content-Disposition": "attachment; filename=vrmbox-export.json"})


@bp.route("/erase", methods=["POST"])
def erase() -> Any:
    if errors := form_errors(request.form, ("word",)):
        return _page(errors, 400)
    if request.form.get("word", "").strip() != ERASE_WORD:
        return _page({"word": f"type {ERASE_WORD} to erase everything"}, 400)
    change("erase", {})
    return redirect(url_for(".index"))
