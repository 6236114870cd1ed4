"""Intents: cast one from a category and its template, choose which attributes to reveal, see
exactly what will be published before casting; presets; withdraw; one intent's offers."""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for

from .inputs import form_errors, summary
from .pages import change, read, score_scale

log = logging.getLogger(__name__)

bp = Blueprint("intents", __name__, url_prefix="/intents")

# Category -> the attributes its template suggests (the person reveals only those ticked).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "bikes": ("budget_max", "postcode_district", "frame_size", "type"),
    "tents": ("budget_max", "people", "season"),
    "electricity": ("postcode_district", "annual_kwh", "green_only"),
    "broadband": ("postcode_district", "min_mbps", "budget_max"),
    "car-insurance": ("postcode_district", "car_value", "no_claims_years"),
    "holidays": ("destination", "nights", "budget_max", "people"),
}
ROWS = 6
TTL_DAYS = {"1": 1, "7": 7, "30": 30, "90": 90}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ATTR = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_DESCRIPTION = 500
MAX_VALUE = 200


def parse_value(text: str) -> Any:
    """'800' -> 800, '2.5' -> 2.5, 'true' -> True, 'a, b' stays text (pure)."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def parse_form(form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The intent the form describes, and field errors ({} when fine). Pure over a mapping."""
    errors: dict[str, str] = {}
    category = (form.get("category") or "").strip().lower()
    if not _SLUG.match(category):
        errors["category"] = "a category is lower-case letters, digits, '-', '.' or '_' (e.g. bikes)"
    description = (form.get("description") or "").strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"at most {MAX_DESCRIPTION} characters"
    ttl = form.get("ttl_days") or "7"
    if ttl not in TTL_DAYS:
        errors["ttl_days"] = "choose how long the intent stays open"
    attributes: dict[str, Any] = {}
    for i in range(ROWS):
        name = (form.get(f"attr_name_{i}") or "").strip()
        value = (form.get(f"attr_value_{i}") or "").strip()
        if not name and not value:
            continue
        if not form.get(f"attr_reveal_{i}"):
            continue                       # not ticked: stays on the box
        if not _ATTR.match(name):
            errors[f"attr_name_{i}"] = "a name is lower-case letters, digits and '_' (e.g. budget_max)"
        elif not value:
            errors[f"attr_value_{i}"] = "give a value, or untick it"
        elif len(value) > MAX_VALUE:
            errors[f"attr_value_{i}"] = f"at most {MAX_VALUE} characters"
        elif name in attributes:
            errors[f"attr_name_{i}"] = "this attribute is already given above"
        else:
            attributes[name] = parse_value(value)
    intent = {"category": category, "description": description or None, "attributes": attributes,
              "ttl": TTL_DAYS.get(ttl, 7) * 86400}
    return intent, errors


def posted(form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """parse_form, and errors for missing fields and control characters too: the form always
    sends category, description and ttl_days; an attribute row is both of its fields or neither
    (a row left out is an empty row, a half row is a broken form)."""
    intent, errors = parse_form(form)
    required = ["category", "description", "ttl_days"]
    for i in range(ROWS):
        pair = (f"attr_name_{i}", f"attr_value_{i}")
        if any(n in form for n in pair):
            required += pair
    bad = form_errors(form, required)
    for i in range(ROWS):                  # a tick box's error shows under its row
        if f"attr_reveal_{i}" in bad:
            bad[f"attr_name_{i}"] = bad.pop(f"attr_reveal_{i}")
    return intent, {**errors, **bad}


def wire_preview(intent: dict[str, Any]) -> str:
    """What vendors will read, as JSON: the signed body's person-chosen part (the box adds a
    fresh random id, your terms' id and hash, and signs it with a key made for this intent)."""
    body = {"category": intent["category"], "attributes": intent["attributes"]}
    if intent.get("description"):
        body["description"] = intent["description"]
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True)


def _rows(form: Any, category: str) -> list[dict[str, Any]]:
    names = TEMPLATES.get(category, ())
    rows = []
    for i in range(ROWS):
        default = names[i] if i < len(names) else ""
        rows.append({"i": i, "name": form.get(f"attr_name_{i}", default) if form else default,
                     "value": form.get(f"attr_value_{i}", "") if form else "",
                     "reveal": bool(form.get(f"attr_reveal_{i}")) if form else False})
    return rows


@bp.route("/")
def index() -> Any:
    category = request.args.get("category", "bikes")
    if category not in TEMPLATES:
        category = "bikes"
    return render_template("intents.html", intents=read("intents", {}, []) or [],
                           presets=read("presets", {}, []) or [], templates=TEMPLATES,
                           category=category, rows=_rows(None, category), errors={}, form={},
                           ttl_days=TTL_DAYS)


@bp.route("/preview", methods=["POST"])
def preview() -> Any:
    intent, errors = posted(request.form)
    if errors:
        return render_template("intents.html", intents=read("intents", {}, []) or [],
                               presets=read("presets", {}, []) or [], templates=TEMPLATES,
                               category=intent["category"], rows=_rows(request.form, intent["category"]),
                               errors=errors, form=request.form, ttl_days=TTL_DAYS), 400
    return render_template("intent_preview.html", intent=intent, wire=wire_preview(intent),
                           form=request.form, rows=ROWS)


@bp.route("/", methods=["POST"])
def create() -> Any:
    intent, errors = posted(request.form)
    if errors:
        return render_template("intents.html", intents=read("intents", {}, []) or [],
                               presets=read("presets", {}, []) or [], templates=TEMPLATES,
                               category=intent["category"], rows=_rows(request.form, intent["category"]),
                               errors=errors, form=request.form, ttl_days=TTL_DAYS), 400
    ok, _ = change("intent_add", intent, done=f"Intent for {intent['category']} cast.")
    return redirect(url_for("dashboard.index") if ok else url_for(".index"))


@bp.route("/preset", methods=["POST"])
def preset() -> Any:
    if errors := form_errors(request.form, ("name",)):
        return render_template("error.html", status=400, message=summary(errors)), 400
    name = request.form.get("name", "")
    if not name or len(name) > 100:
        return render_template("error.html", status=400, message="choose a preset"), 400
    change("intent_preset", {"name": name}, done=f"Intent from preset {name!r} cast.")
    return redirect(url_for("dashboard.index"))


@bp.route("/<intent_id>/withdraw", methods=["POST"])
def withdraw(intent_id: str) -> Any:
    change("intent_withdraw", {"intent": intent_id}, done="Intent withdrawn.")
    return redirect(url_for(".index"))


@bp.route("/<intent_id>")
def show(intent_id: str) -> Any:
    intents = [i for i in read("intents", {}, []) or [] if i["intent"] == intent_id]
    if not intents:
        abort(404)
    offers = read("offers", {"intent": intent_id, "all": True}, []) or []
    return render_template("intent.html", intent=intents[0], offers=offers,
                           scale=score_scale(read("rules", {}, None)))
