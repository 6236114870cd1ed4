"""My data: profile fields with their provenance, my stuff, suppliers, what I am in the market
for (open intents), verified claims and reviews. Every change is a daemon operation."""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from .inputs import form_errors
from .pages import change, read

log = logging.getLogger(__name__)

bp = Blueprint("mydata", __name__, url_prefix="/mydata")

_FIELD = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_TEXT = 2000
MAX_TOKEN = 64 * 1024


def profile_rows(profile: Any) -> list[dict[str, Any]]:
    """The profile op's answer as rows, whichever shape it has ({name: {...}} or [{name...}])."""
    if isinstance(profile, dict):
        return [{"name": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in sorted(profile.items())]
    if isinstance(profile, list):
        return [p for p in profile if isinstance(p, dict)]
    return []


def _page(errors: dict[str, str] | None = None, form: Any = None, status: int = 200) -> Any:
    return render_template(
        "mydata.html", profile=profile_rows(read("profile", {}, None)),
        stuff=read("stuff", {}, []) or [], suppliers=read("suppliers", {}, []) or [],
        reviews=read("reviews", {}, []) or [], claims=read("claims", {}, []) or [],
        intents=read("intents", {"status": "active"}, []) or [], errors=errors or {},
        form=form or {}), status


def _text(form: Any, name: str, errors: dict[str, str], required: bool = False,
          limit: int = MAX_TEXT) -> str | None:
    value = (form.get(name) or "").strip()
    if required and not value:
        errors[name] = "required"
    elif len(value) > limit:
        errors[name] = f"at most {limit} characters"
    return value or None


def _refusals(errors: dict[str, str], *required: str) -> dict[str, str]:
    """`errors` with those of inputs.form_errors on top: missing fields, control characters."""
    errors.update(form_errors(request.form, required))
    return errors


@bp.route("/")
def index() -> Any:
    return _page()


@bp.route("/profile", methods=["POST"])
def profile_set() -> Any:
    errors: dict[str, str] = {}
    name = _text(request.form, "name", errors, required=True, limit=64)
    value = _text(request.form, "value", errors, required=True)
    if name and not _FIELD.match(name):
        errors["name"] = "a field name is letters, digits, '_', '.' or '-' (e.g. email)"
    if _refusals(errors, "name", "value"):
        return _page(errors, request.form, 400)
    change("profile_set", {"name": name, "value": value}, done=f"{name} saved.")
    return redirect(url_for(".index"))


@bp.route("/profile/<name>/annotate", methods=["POST"])
def profile_annotate(name: str) -> Any:
    errors: dict[str, str] = {}
    note = _text(request.form, "annotation", errors, limit=500)
    if _refusals(errors, "annotation"):
        if "annotation" in errors:             # shown next to that field's own note box
            errors[f"annotation_{name}"] = errors.pop("annotation")
        return _page(errors, request.form, 400)
    change("profile_annotate", {"name": name, "annotation": note}, done=f"Note on {name} saved.")
    return redirect(url_for(".index"))


@bp.route("/profile/<name>/delete", methods=["POST"])
def profile_delete(name: str) -> Any:
    change("profile_delete", {"name": name}, done=f"{name} deleted.")
    return redirect(url_for(".index"))


@bp.route("/stuff", methods=["POST"])
def stuff_add() -> Any:
    errors: dict[str, str] = {}
    args: dict[str, Any] = {"name": _text(request.form, "stuff_name", errors, required=True, limit=200)}
    supplier = _text(request.form, "supplier", errors, limit=63)
    if supplier and not _SLUG.match(supplier):
        errors["supplier"] = "a vendor id is lower-case letters, digits, '-', '.', '_'"
    date = _text(request.form, "purchase_date", errors, limit=10)
    if date and not _DATE.match(date):
        errors["purchase_date"] = "a date as YYYY-MM-DD"
    price = _text(request.form, "price", errors, limit=20)
    if price:
        try:
            args["price"] = float(price)
            if args["price"] < 0:
                raise ValueError
        except ValueError:
            errors["price"] = f"{price!r} is not a price"
    if _refusals(errors, "stuff_name", "supplier", "purchase_date", "price"):
        return _page(errors, request.form, 400)
    args.update({k: v for k, v in (("supplier", supplier), ("purchase_date", date)) if v})
    change("stuff_add", args, done=f"{args['name']} added to my stuff.")
    return redirect(url_for(".index"))


@bp.route("/suppliers", methods=["POST"])
def supplier_add() -> Any:
    errors: dict[str, str] = {}
    vendor = _text(request.form, "vendor", errors, required=True, limit=63)
    if vendor and not _SLUG.match(vendor):
        errors["vendor"] = "a vendor id is lower-case letters, digits, '-', '.', '_'"
    name = _text(request.form, "supplier_name", errors, required=True, limit=200)
    notes = _text(request.form, "notes", errors)
    if _refusals(errors, "vendor", "supplier_name", "notes"):
        return _page(errors, request.form, 400)
    change("supplier_add", {"vendor": vendor, "name": name, "notes": notes}, done=f"{name} added.")
    return redirect(url_for(".index"))


@bp.route("/reviews", methods=["POST"])
def review_add() -> Any:
    errors: dict[str, str] = {}
    vendor = _text(request.form, "review_vendor", errors, required=True, limit=63)
    text = _text(request.form, "text", errors, required=True)
    rating = request.form.get("rating") or ""
    args: dict[str, Any] = {"vendor": vendor, "text": text}
    if rating:
        if rating not in ("1", "2", "3", "4", "5"):
            errors["rating"] = "a rating is 1 to 5 stars"
        else:
            args["rating"] = int(rating)
    if _refusals(errors, "review_vendor", "rating", "text"):
        return _page(errors, request.form, 400)
    change("review_add", args, done="Review saved.")
    return redirect(url_for(".index"))


@bp.route("/claims", methods=["POST"])
def claims_import() -> Any:
    errors: dict[str, str] = {}
    token = _text(request.form, "token", errors, required=True, limit=MAX_TOKEN)
    if token and token.count(".") != 2:
        errors["token"] = "a verified claim is a signed token (three parts separated by '.')"
    if _refusals(errors, "token"):
        return _page(errors, request.form, 400)
    change("claims_import", {"token": token}, done="Claim verified and imported.")
    return redirect(url_for(".index"))
