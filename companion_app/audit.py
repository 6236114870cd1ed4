"""The audit log as a timeline in words: what happened, to whom, when, and whether that entry
verifies; paged, filterable by kind of event, with the result of `verify` at the top."""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, render_template, request

from .pages import label, labels, plural, read, vendor_names

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


def _vendor(data: dict[str, Any]) -> str:
    slug = str(data.get("vendor") or "")
    return vendor_names().get(slug) or slug or "a vendor"


def _days(data: dict[str, Any]) -> str:
    n = data.get("duration_days")
    return f", for {n} day{'s' if n != 1 else ''}" if isinstance(n, int) else ""


# Settings the box keeps for itself, by key or by the part before ':' (one entry per item).
SETTINGS: dict[str, str] = {
    "companion.phones": "The list of paired phones changed",
    "companion.pairing": "A pairing code was made or used",
    "companion_only_confirmation": "Companion-only confirmation was switched",
    "consented": "Your press on the box fixed what an agreement sends",
    "trusted_issuers": "The issuers of claims you trust changed",
}


def setting_words(key: Any) -> str:
    text = str(key or "")
    return SETTINGS.get(text) or SETTINGS.get(text.partition(":")[0]) or f"A setting changed: {label(text)}"


# Each kind of entry the box writes (device/store, device/pairing.py, ...), as a sentence built
# from its data. The kinds are also the audit filter's choices, named by their first words.
Sentence = Any
WORDS: dict[str, tuple[str, Sentence]] = {
    "intent_published": ("Intent published", lambda d: f"You published an intent for {d.get('category', '?')}"),
    "intent_withdrawn": ("Intent withdrawn", lambda d: f"You withdrew your intent for {d.get('category', '?')}"),
    "intent_expired": ("Intent closed", lambda d: f"Your intent for {d.get('category', '?')} closed: its time ran out"),
    "intent_status_changed": ("Intent changed", lambda d: f"Your intent for {d.get('category', '?')} is now {d.get('status', '?')}"),
    "offer_accepted": ("Offer accepted", lambda d: f"You accepted an offer from {_vendor(d)}"),
    "offer_declined": ("Offer declined", lambda d: f"You declined an offer from {_vendor(d)}"),
    "offer_snoozed": ("Offer snoozed", lambda d: f"You snoozed an offer from {_vendor(d)}"),
    "offer_status_changed": ("Offer changed", lambda d: f"An offer from {_vendor(d)} changed"),
    "agreement_signed": ("Agreement signed", lambda d: f"You accepted to share {labels(d.get('fields'))} "
                                                      f"with {_vendor(d)}{_days(d)}; nothing sent yet"),
    "agreement_confirmed": ("Agreement confirmed", lambda d: f"The agreement with {_vendor(d)} was confirmed "
                                                            f"and sent to it for its signature"),
    "agreement_active": ("Agreement active", lambda d: f"The agreement with {_vendor(d)} became active"),
    "agreement_ended": ("Agreement ended", lambda d: f"The agreement with {_vendor(d)} ended"),
    "agreement_revoked": ("Agreement revoked", lambda d: f"You revoked the agreement with {_vendor(d)}"),
    "agreement_countersigned": ("Vendor countersigned", lambda d: f"{_vendor(d)} countersigned the agreement"),
    "data_disclosed": ("Data sent", lambda d: f"Sent your {labels(d.get('fields'))} to {_vendor(d)}"),
    "deletion_requested": ("Deletion asked", lambda d: f"Asked {_vendor(d)} to delete your data"),
    "deletion_acknowledged": ("Deletion confirmed", lambda d: f"{_vendor(d)} confirmed that it deleted your data"),
    "revocation_acknowledged": ("Revocation received", lambda d: f"{_vendor(d)} received the revocation"),
    "rules_changed": ("Rules changed", lambda d: "You changed your rules"),
    "stuff_added": ("Thing added", lambda d: "You added a thing to My stuff"),
    "supplier_added": ("Supplier added", lambda d: f"You added {_vendor(d)} to your suppliers"),
    "supplier_changed": ("Supplier changed", lambda d: f"You changed supplier {_vendor(d)}"),
    "review_written": ("Review written", lambda d: f"You wrote a review of {_vendor(d)}"),
    "claim_imported": ("Claim imported", lambda d: f"You imported a verified claim ({', '.join(map(str, d.get('types') or [])) or '?'})"),
    "profile_changed": ("Profile field saved", lambda d: f"Your {label(d.get('field'))} was saved"
                                                        + (f" (from {d['provenance']})" if d.get("provenance") not in (None, "self") else "")),
    "profile_annotated": ("Note added", lambda d: f"You added a note to your {label(d.get('field'))}"),
    "profile_deleted": ("Profile field deleted", lambda d: f"You deleted your {label(d.get('field'))}"),
    "setting_changed": ("Setting changed", lambda d: setting_words(d.get("key"))),
    "vendor_pinned": ("Vendor met", lambda d: f"Met {_vendor(d)} for the first time; the box keeps its key"),
    "vendor_key_changed": ("Vendor key changed", lambda d: f"{_vendor(d)} signed with a different key; "
                                                          f"held until you accept it"),
    "vendor_status_changed": ("Vendor status changed", lambda d: f"{_vendor(d)} is now {d.get('status', '?')}"),
    "vendor_key_accepted": ("Vendor key accepted", lambda d: f"You accepted {_vendor(d)}'s new key"),
    "offers_rejected": ("Messages refused", lambda d: f"Refused {plural(d.get('count'), 'message')} "
                                                     f"{'from ' + _vendor(d) + ' ' if d.get('vendor') else ''}"
                                                     f"({label(d.get('reason'))})"),
    "pairing_failed": ("Wrong pairing code", lambda d: "A wrong pairing code was typed"),
    "phone_paired": ("Phone paired", lambda d: f"Paired a phone: “{d.get('name', '?')}”"),
    "phone_unpaired": ("Phone unpaired", lambda d: f"Unpaired a phone: “{d.get('name') or '?'}”"),
    "outbox_refused": ("Message not sent", lambda d: f"A message could not be sent ({label(d.get('reason'))})"),
    "erase": ("Erased", lambda d: "Everything on the box was erased"),
    "export": ("Exported", lambda d: "Your data was exported"),
    "backup": ("Backup made", lambda d: "A backup of the box was made"),
}


def verified(seq: Any, result: Any) -> bool | None:
    """Whether one entry is covered by the chain's check: every entry when the log verifies,
    those before the first bad one when it does not; None when the check is unknown."""
    if not isinstance(result, dict):
        return None
    if result.get("ok"):
        return True
    bad = result.get("first_bad")
    return isinstance(bad, int) and isinstance(seq, int) and seq < bad


def timeline(entries: list[dict[str, Any]], result: Any) -> list[dict[str, Any]]:
    """Each entry as {seq, event, what, who, phone, when, verified, details}: a sentence, the
    vendor it concerns (or the phone), never the raw data as JSON."""
    out = []
    for e in entries:
        data = e.get("data") if isinstance(e.get("data"), dict) else {}
        kind = str(e.get("event_type") or "")
        words = WORDS.get(kind)
        try:
            what = words[1](data) if words else label(kind)
        except (TypeError, ValueError, KeyError):
            what = label(kind)
        details = [] if words else [(label(k), v) for k, v in data.items()
                                    if isinstance(v, (str, int, float, bool))]
        out.append({"seq": e.get("seq"), "event": kind, "what": what,
                    "who": data.get("vendor") if isinstance(data.get("vendor"), str) else None,
                    "when": e.get("created_at"), "verified": verified(e.get("seq"), result),
                    "details": details})
    return out


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
                               page=1, kind="", page_size=PAGE, kinds=WORDS), 400
    # newest first: page 1 is the last PAGE entries of the log
    _, total = entries_of(read("audit", {"offset": 0, "limit": 1}, None))
    if total is not None:
        end = max(0, total - args["offset"])
        args = {**args, "offset": max(0, end - PAGE), "limit": max(1, min(PAGE, end))}
    entries, _ = entries_of(read("audit", args, None)) if total else ([], None)
    entries.reverse()
    result = read("audit_verify", {}, None)
    return render_template("audit.html", entries=timeline(entries, result), total=total, verify=result,
                           errors={}, page=page_no, kind=args.get("type", ""),
                           page_size=PAGE, kinds=WORDS)
