"""Rules: forms for filters and preferences; a preview of how the current offers would re-rank
before saving; then save. Validation is the box's own (device.rules.validate_rules, pure), so a
message names the exact field; the daemon validates again when it stores them."""
from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from device.rules import RulesError, default_rules, validate_rules

from .box import BoxError
from .inputs import form_errors
from .pages import box, change, read, score_scale

log = logging.getLogger(__name__)

bp = Blueprint("rules", __name__, url_prefix="/rules")

WEIGHTS = ("price", "known_supplier", "reputation", "delivery", "brands_liked", "brands_disliked")
LISTS = {"currencies": "filters", "regions": "filters", "vendors_allow": "filters",
         "vendors_block": "filters", "categories": "filters"}
MAX_JSON = 20_000
TERMS = "require_terms_accepted"
# Every field the rules form sends (the terms checkbox has a hidden "off" before it, so an
# unticked box is told apart from a missing one): a post without one of them changes nothing.
REQUIRED = ("max_price_amount", "max_price_currency", *LISTS, "max_delivery_days", TERMS,
            "attr_filters", *(f"w_{n}" for n in WEIGHTS), "attr_weights", "brands_liked",
            "brands_disliked")


def ticked(form: Any, name: str) -> bool:
    """A checkbox with a hidden "off" before it: ticked when any value sent is not "off"."""
    values = form.getlist(name) if hasattr(form, "getlist") else [form.get(name)]
    return any(v and v != "off" for v in values)


def _list(text: str, upper: bool = False) -> list[str]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return [t.upper() for t in items] if upper else items


def rules_from_form(form: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The rules the form describes (not yet validated), or field errors. Pure over a mapping."""
    errors: dict[str, str] = {}
    filters: dict[str, Any] = {}
    amount = (form.get("max_price_amount") or "").strip()
    if amount:
        try:
            filters["max_price"] = {"amount": float(amount),
                                    "currency": (form.get("max_price_currency") or "EUR").strip().upper()}
        except ValueError:
            errors["max_price_amount"] = f"{amount!r} is not a price (e.g. 800 or 799.99)"
    for name in LISTS:
        values = _list(form.get(name, ""), upper=name in ("currencies", "regions"))
        if values:
            filters[name] = values
    days = (form.get("max_delivery_days") or "").strip()
    if days:
        try:
            filters["max_delivery_days"] = int(days)
        except ValueError:
            errors["max_delivery_days"] = "a whole number of days"
    filters["require_terms_accepted"] = ticked(form, TERMS)
    weights: dict[str, Any] = {}
    for name in WEIGHTS:
        text = (form.get(f"w_{name}") or "0").strip()
        try:
            weights[name] = float(text)
        except ValueError:
            errors[f"w_{name}"] = f"{text!r} is not a number (0 switches it off)"
    for key, target, where in (("attr_filters", filters, "attributes"),
                               ("attr_weights", weights, "attributes")):
        text = (form.get(key) or "").strip()
        if not text:
            continue
        if len(text) > MAX_JSON:
            errors[key] = "too long"
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            errors[key] = f"not JSON: {exc}"
            continue
        target[where] = value
    rules = {"version": 1, "filters": filters, "weights": weights,
             "brands": {"liked": _list(form.get("brands_liked", "")),
                        "disliked": _list(form.get("brands_disliked", ""))}}
    return (None, errors) if errors else (rules, {})


FIELD_OF_PATH = {"filters.max_price": "max_price_amount", "filters.max_delivery_days": "max_delivery_days",
                 "filters.attributes": "attr_filters", "weights.attributes": "attr_weights",
                 "brands.liked": "brands_liked", "brands.disliked": "brands_disliked",
                 **{f"filters.{n}": n for n in LISTS}, **{f"weights.{n}": f"w_{n}" for n in WEIGHTS}}


def field_for(path: str) -> str:
    """The form field a RulesError path belongs to ('filters.currencies[1]' -> 'currencies')."""
    for prefix in sorted(FIELD_OF_PATH, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
            return FIELD_OF_PATH[prefix]
    return "_form"


def check(form: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    rules, errors = rules_from_form(form)
    if rules is None:
        return None, errors
    try:
        return validate_rules(rules), {}
    except RulesError as exc:
        return None, {field_for(exc.path): str(exc)}


def form_from_rules(rules: dict[str, Any]) -> dict[str, str]:
    f, w, b = rules.get("filters", {}), rules.get("weights", {}), rules.get("brands", {})
    out = {name: ", ".join(f.get(name, [])) for name in LISTS}
    if "max_price" in f:
        out["max_price_amount"] = f"{f['max_price']['amount']:g}"
        out["max_price_currency"] = f["max_price"]["currency"]
    if "max_delivery_days" in f:
        out["max_delivery_days"] = str(f["max_delivery_days"])
    out["require_terms_accepted"] = "on" if f.get("require_terms_accepted") else ""
    for name in WEIGHTS:
        out[f"w_{name}"] = f"{w.get(name, 0):g}"
    out["attr_filters"] = json.dumps(f["attributes"]) if f.get("attributes") else ""
    out["attr_weights"] = json.dumps(w["attributes"]) if w.get("attributes") else ""
    out["brands_liked"] = ", ".join(b.get("liked", []))
    out["brands_disliked"] = ", ".join(b.get("disliked", []))
    return out


def shown(form: Any) -> dict[str, str]:
    """A posted form as the page shows it again (first value of each field, the checkbox as
    "on" or "")."""
    out = {k: form.get(k, "") for k in form}
    out[TERMS] = "on" if ticked(form, TERMS) else ""
    return out


def posted() -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The posted rules, validated; errors also for missing fields and control characters."""
    rules, errors = check(request.form)
    errors = {**errors, **form_errors(request.form, REQUIRED)}
    return (None, errors) if errors else (rules, {})


def _refused(errors: dict[str, str]) -> Any:
    return render_template("rules.html", form=shown(request.form), errors=errors, preview=None,
                           weights=WEIGHTS), 400


@bp.route("/")
def index() -> Any:
    rules = read("rules", {}, None) or default_rules()
    return render_template("rules.html", form=form_from_rules(rules), errors={}, preview=None,
                           weights=WEIGHTS)


@bp.route("/preview", methods=["POST"])
def preview() -> Any:
    rules, errors = posted()
    if errors:
        return _refused(errors)
    try:   # the box re-ranks its stored offers under the candidate rules without saving them
        ranked = box().call("rules_preview", {"rules": rules})
    except BoxError:
        ranked = None
    return render_template("rules.html", form=shown(request.form), errors={}, weights=WEIGHTS,
                           preview={"ranked": ranked, "available": ranked is not None,
                                    "current": read("offers", {"all": True}, []) or [],
                                    "scale": score_scale(rules),
                                    "current_scale": score_scale(read("rules", {}, None))})


@bp.route("/", methods=["POST"])
def save() -> Any:
    rules, errors = posted()
    if errors:
        return _refused(errors)
    ok, _ = change("rules_set", {"rules": rules}, done="Rules saved: offers are ranked by them now.")
    return redirect(url_for("dashboard.index") if ok else url_for(".index"))
