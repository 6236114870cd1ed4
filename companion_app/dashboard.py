"""Dashboard: ranked offers per open intent with each score's explanation; accept / decline /
snooze. (Their live updates come over /events: stream.py.)"""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from .inputs import form_errors, summary
from .mydata import profile_rows
from .pages import (back, cached_page, change, filter_words, install_display, read, score_scale)

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__)
install_display(bp)            # dashboard's blueprint is always registered: the helpers go with it

TOP_PER_INTENT = 10
SNOOZE_CHOICES = {"3600": "1 hour", "86400": "1 day", "604800": "1 week"}
MAX_PURPOSE = 200


def group_offers(intents: list[dict[str, Any]], offers: list[dict[str, Any]],
                 top: int = TOP_PER_INTENT) -> list[dict[str, Any]]:
    """Open intents, newest first, each with its best `top` offers in ranked order (pure)."""
    by_intent: dict[str, list[dict[str, Any]]] = {}
    for o in offers:
        by_intent.setdefault(o["intent"], []).append(o)
    out = []
    for i in sorted(intents, key=lambda i: -(i.get("created_at") or 0)):
        mine = by_intent.get(i["intent"], [])
        out.append({**i, "ranked": mine[:top], "more": max(0, len(mine) - top)})
    return out


# Why an offer received for an intent is not among those shown, in the order they are listed.
NOT_SHOWN = (("hidden", "hidden by your rules"), ("expired", "expired"), ("snoozed", "snoozed"),
             ("declined", "declined"), ("accepted", "accepted"), ("other", "closed"))


def tally(received: int, shown: set[str], offers: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """How the offers received for one intent that are not shown divide up: (key, words, n)
    for each reason with n > 0, so "received" = shown + these (pure). `offers`: all of the
    intent's offers (`offers` with all), `shown`: the ids on the dashboard."""
    counts = dict.fromkeys((k for k, _ in NOT_SHOWN), 0)
    for o in offers:
        if o.get("offer") in shown:
            continue
        status = o.get("status")
        failed = (o.get("explanation") or {}).get("failed") or []
        if any(str(f).startswith("not_expired") for f in failed):
            counts["expired"] += 1
        elif status in ("new", "snoozed") and not o.get("eligible", True):
            counts["hidden"] += 1
        elif status in counts:
            counts[str(status)] += 1
        else:
            counts["other"] += 1
    rest = received - len(shown) - sum(counts.values())
    if rest > 0:                                # received but not listed: say so, not hide it
        counts["other"] += rest
    return [(k, words, counts[k]) for k, words in NOT_SHOWN if counts[k]]


def dashboard_data() -> list[dict[str, Any]]:
    intents = read("intents", {"status": "active"}, [])
    offers = read("offers", {}, [])
    groups = group_offers(intents or [], offers or [])
    scale = score_scale(read("rules", {}, None))
    for grp in groups:
        shown = len(grp["ranked"]) + grp["more"]
        received = grp.get("offers") if isinstance(grp.get("offers"), int) else shown
        grp["received"], grp["shown"], grp["scale"], grp["not_shown"] = received, shown, scale, []
        if received != shown:                   # only then: ask for the intent's other offers
            everything = read("offers", {"intent": grp["intent"], "all": True}, None)
            if isinstance(everything, list):
                ids = {o["offer"] for o in (offers or []) if o.get("intent") == grp["intent"]}
                grp["not_shown"] = tally(received, ids, everything)
    return groups


@bp.route("/")
def index() -> Any:
    return cached_page("dashboard", lambda: render_template("dashboard.html", groups=dashboard_data()))


@bp.route("/fragments/offers")
def offers_fragment() -> Any:
    """The offers part of the dashboard, fetched by static/live.js when an event arrives."""
    return cached_page("offers", lambda: render_template("_offers.html", groups=dashboard_data()))


def _offer(offer_id: str) -> dict[str, Any] | None:
    for o in read("offers", {"all": True}, []) or []:
        if o["offer"] == offer_id:
            return o
    return None


def not_acceptable(offer: dict[str, Any] | None) -> str | None:
    """Why this offer cannot be accepted, in words, or None: one that fails the person's rules
    or that they already acted on gets no Accept button and no form."""
    if offer is None:
        return None
    if not offer.get("eligible", True):
        why = [filter_words(f, False) for f in (offer.get("explanation") or {}).get("failed") or []]
        return "It does not pass your rules" + (f": {'; '.join(why)}." if why else ".")
    if offer.get("status") not in (None, "new", "snoozed"):
        return f"You have already {offer.get('status')} it."
    return None


def _intent_of(offer: dict[str, Any] | None) -> dict[str, Any] | None:
    if offer is None:
        return None
    for i in read("intents", {}, []) or []:
        if i.get("intent") == offer.get("intent"):
            return i
    return None


@bp.route("/offers/<offer_id>/accept", methods=["GET", "POST"])
def accept(offer_id: str) -> Any:
    offer = _offer(offer_id)
    if offer is None and not g.get("box_down"):
        abort(404)
    refusal = not_acceptable(offer)
    if refusal:
        return render_template("accept.html", offer=offer, offer_id=offer_id, field_names=[],
                               preview={}, errors={}, form={}, refusal=refusal,
                               intent=_intent_of(offer)), 400 if request.method == "POST" else 200
    field_names = sorted(p["name"] for p in profile_rows(read("profile", {}, None)) if "name" in p)
    preview = read("accept_preview", {"offer": offer_id}, None) if offer else None
    preview = preview if isinstance(preview, dict) else {}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = {"fields": request.form.getlist("fields"), "purpose": request.form.get("purpose", ""),
                "duration_days": request.form.get("duration_days", "30")}
    else:   # the box's defaults: what a press on the box would share
        form = {"fields": preview.get("fields", []), "purpose": preview.get("purpose", ""),
                "duration_days": str(preview.get("duration_days", 30))}
    if request.method == "POST":
        fields = [f.strip() for f in form["fields"] if f.strip()]
        typed = request.form.get("fields_typed", "")
        fields += [f.strip() for f in typed.split(",") if f.strip()]
        if not fields:
            errors["fields"] = "choose at least one field to share"
        elif field_names and (unknown := sorted(set(fields) - set(field_names))):
            errors["fields"] = f"unknown field(s): {', '.join(unknown)}"
        purpose = form["purpose"].strip()
        if len(purpose) > MAX_PURPOSE:
            errors["purpose"] = f"at most {MAX_PURPOSE} characters"
        try:
            days = int(form["duration_days"])
            if not 1 <= days <= 3650:
                raise ValueError
        except ValueError:
            errors["duration_days"] = "a whole number of days, 1 to 3650"
            days = 0
        bad = form_errors(request.form, ("purpose", "duration_days"))
        if "fields_typed" in bad:              # shown under the one "fields" slot of the page
            bad["fields"] = bad.pop("fields_typed")
        errors.update(bad)
        if not errors:
            ok, result = change("offer_accept", {"offer": offer_id, "fields": fields,
                                                 "purpose": purpose or None, "duration_days": days},
                                # what happens next is said on the agreement itself, which
                                # follows its state live; a flash would outlive it
                                done="Accepted and signed on the box.")
            if ok:
                return redirect(url_for("agreements.index", highlight=result.get("agreement")))
    status = 400 if errors else 200
    return render_template("accept.html", offer=offer, offer_id=offer_id, field_names=field_names,
                           preview=preview, errors=errors, form=form, refusal=None,
                           intent=_intent_of(offer)), status


def refused(errors: dict[str, str]) -> Any:
    """A form post without a page of its own to show field errors on: an error page, 400."""
    return render_template("error.html", status=400, message=summary(errors)), 400


@bp.route("/offers/<offer_id>/decline", methods=["POST"])
def decline(offer_id: str) -> Any:
    target = back(url_for(".index"))          # decided before anything changes
    if errors := form_errors(request.form):
        return refused(errors)
    change("offer_decline", {"offer": offer_id}, done="Declined.")
    return redirect(target)


@bp.route("/offers/<offer_id>/snooze", methods=["POST"])
def snooze(offer_id: str) -> Any:
    target = back(url_for(".index"))
    if errors := form_errors(request.form, ("seconds",)):
        return refused(errors)
    seconds = request.form["seconds"]
    if seconds not in SNOOZE_CHOICES:
        return render_template("error.html", status=400, message="choose how long to snooze"), 400
    change("offer_snooze", {"offer": offer_id, "seconds": int(seconds)},
           done=f"Snoozed for {SNOOZE_CHOICES[seconds]}.")
    return redirect(target)
