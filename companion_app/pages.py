"""How a page talks to the box: reads that degrade to "the daemon is not running", changes whose
refusals become a message for the person, and held requests shown plainly.

Why one place: every blueprint needs the same three outcomes (done, refused with a reason, box
down), and the person must see the same words for each on every page.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Response, abort, current_app, flash, g, render_template, request, session
from markupsafe import Markup, escape

from device.textsafe import for_page

from .box import DOWN_MESSAGE, HELD, Box, BoxDown, BoxRefused
from .inputs import form_errors, summary
from .readcache import ReadCache

log = logging.getLogger(__name__)


class _Unconfirmed:
    """Stands in for the box in a request whose cookie the box could not confirm (it was down):
    with nothing to check it against, a cookie is just a string anyone on the Wi-Fi could send,
    so such a request reaches neither the box (were it back a moment later) nor its cached
    answers. Its pages still render, with the banner and no data."""

    def running(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        def refuse(*_a: Any, **_k: Any) -> Any:
            raise BoxDown("this phone could not be confirmed while the box was down")
        return refuse


_UNCONFIRMED = _Unconfirmed()


def _unconfirmed() -> bool:
    """A request that came in with a cookie while the box could not say whose it is."""
    return bool(g.get("box_down")) and g.get("phone") is None


def box() -> Box:
    if _unconfirmed():
        return _UNCONFIRMED     # type: ignore[return-value]
    return current_app.config["BOX"]


def reads() -> ReadCache:
    if _unconfirmed():
        return ReadCache(_UNCONFIRMED, ttl_s=0)     # type: ignore[arg-type]  (empty: nothing cached is shown)
    return current_app.extensions["vrmbox_reads"]


def read(op: str, args: dict[str, Any] | None = None, default: Any = None) -> Any:
    """A read for a page: on failure the page still renders (banner, or the refusal flashed)."""
    try:
        return reads().call(op, args)
    except BoxDown:
        g.box_down = True
        return default
    except BoxRefused as exc:
        flash(str(exc), "error")
        return default


def cached_page(name: str, render: Any) -> str:
    """A read-only page for this phone, reused until the box reports a change (readcache.py).
    Never when a message is waiting to be shown (flashes are once-only) or the box is down."""
    phone = g.get("phone")
    if not phone or session.get("_flashes"):
        return render()
    # the page holds this session's CSRF token: one entry per phone and session token
    key = f"{phone['phone']}:{session.get('csrf_token', '')}:{name}:{request.full_path}"
    return reads().page(key, render)


def held_message(result: Any) -> str | None:
    """The words for a request the box holds until its button is long-pressed, else None."""
    if isinstance(result, dict) and result.get("status") == HELD:
        what = result.get("what") or "approve this change"
        return (f"Waiting for the box: press and hold the button on the box to {what} "
                f"(request {result.get('request', '?')}). Nothing has changed yet.")
    return None


def change(op: str, args: dict[str, Any] | None = None, done: str | None = None) -> tuple[bool, Any]:
    """A change asked of the box; (True, result) when the box took it (done or held). Never
    when the request holds a control character in any field (inputs.py: each page checks its
    own fields first, to say so next to the field; this is the net under them)."""
    if bad := form_errors(request.form):
        abort(Response(render_template("error.html", status=400, message=summary(bad)), status=400,
                       mimetype="text/html"))
    try:
        result = box().call(op, args)
    except BoxDown:
        g.box_down = True
        flash(f"Not done: {DOWN_MESSAGE}.", "error")
        return False, None
    except BoxRefused as exc:
        flash(f"Not done: {exc}", "error")
        return False, None
    finally:
        reads().invalidate()     # the next page shows the change even before the box's event
    held = held_message(result)
    if held:
        flash(held, "held")
    elif done:
        flash(done, "ok")
    return True, result


# A path on this site and nothing else: one leading slash, then only URL characters (no
# backslash, no control character or space, no '#'), no '//' anywhere. Browsers drop a tab or a
# line break inside a URL, so "/<TAB>/evil.example" would become "//evil.example", another site.
SAME_SITE_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,299}")


def safe_next(value: Any) -> str | None:
    """`value` when it is a strict same-origin path (SAME_SITE_PATH), else None."""
    if isinstance(value, str) and SAME_SITE_PATH.fullmatch(value) and "//" not in value:
        return value
    return None


def back(default: str) -> str:
    """Where to go after a form: the form's own `next` when it is a strict same-origin path,
    else `default`. Ask for it before the change, so a bad `next` can never fail after it."""
    return safe_next(request.form.get("next", "")) or default


# ================================================================ display helpers
# What the person reads: names in words, money and times marked up with their machine values so
# static/local.js can show them in the phone's own locale and time zone (Intl), with a
# server-rendered text inside that is already correct when no script runs. Every helper that
# returns markup passes text through for_page and escapes it itself, because Jinja's finalize
# hook (which does that for plain values) leaves markup alone.

# Every name the box uses for a field, an attribute or a rule part, in words: the one table the
# pages, the audit timeline and the score explanations read. A name not listed is shown with
# '_' as spaces and a capital letter (`label`), never as the raw name.
LABELS: dict[str, str] = {
    # profile fields
    "email": "Email", "postal_address": "Postal address", "phone": "Phone number",
    "name": "Name", "given_name": "First name", "family_name": "Last name",
    "postcode": "Postcode", "birth_date": "Date of birth", "date_of_birth": "Date of birth",
    "loyalty": "Loyalty membership",
    # intent attributes (the templates of intents.py)
    "budget_max": "Highest budget", "postcode_district": "Postcode district",
    "frame_size": "Frame size", "type": "Type", "people": "People", "season": "Season",
    "annual_kwh": "Yearly use (kWh)", "green_only": "Green energy only",
    "min_mbps": "Lowest speed (Mbps)", "car_value": "Value of the car",
    "no_claims_years": "Years without a claim", "destination": "Destination", "nights": "Nights",
    # score parts (device/ranking.py) and rule weights
    "price": "Price", "known_supplier": "A supplier you already use",
    "reputation": "The vendor's track record with you", "delivery": "Delivery time",
    "brands_liked": "A brand you like", "brands_disliked": "A brand you avoid",
}

# A filter the offer passed, in words (device/rules.py CompiledRules.check names them).
PASSED: dict[str, str] = {
    "not_expired": "still open", "require_terms_accepted": "the vendor accepted your terms",
    "max_price": "within your highest price", "budget": "within your budget",
    "currencies": "in a currency you take", "regions": "delivers to your regions",
    "min_validity_s": "stays open long enough", "max_delivery_days": "delivered soon enough",
    "vendors_allow": "a vendor you allow", "vendors_block": "not a vendor you blocked",
    "categories": "in a category you chose",
}
# A filter it failed: the words, then the box's reason in brackets.
FAILED: dict[str, str] = {
    "not_expired": "the offer has expired", "require_terms_accepted": "the vendor did not accept your terms",
    "max_price": "over your highest price", "budget": "over your budget",
    "currencies": "in a currency you do not take", "regions": "not for your regions",
    "min_validity_s": "not open long enough", "max_delivery_days": "delivery takes too long",
    "vendors_allow": "not a vendor you allow", "vendors_block": "a vendor you blocked",
    "categories": "not in a category you chose",
}
STATUS_WORDS: dict[str, str] = {
    "new": "new", "snoozed": "snoozed", "declined": "declined", "accepted": "accepted",
    "expired": "expired", "active": "open", "withdrawn": "withdrawn",
    "pending_confirmation": "waiting for the button on the box", "confirmed": "confirmed",
    "revoked": "revoked", "ended": "ended",
}


def label(name: Any) -> str:
    """A field, attribute or rule name in words: 'postal_address' -> 'Postal address'."""
    text = str(name or "")
    if text in LABELS:
        return LABELS[text]
    if text.startswith("item.attributes."):        # an attribute preference's path
        text = text[len("item.attributes."):]
    words = text.replace("_", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:] if words else "?"


def labels(names: Any) -> str:
    """Several names in words, 'Email and Postal address'."""
    items = [label(n) for n in (names or [])]
    if len(items) <= 1:
        return "".join(items) or "nothing"
    return ", ".join(items[:-1]) + " and " + items[-1]


def status_words(status: Any) -> str:
    return STATUS_WORDS.get(str(status), str(status or "").replace("_", " "))


def contribution_words(name: str) -> str:
    """A score part in words; an attribute preference is named after its attribute and sense,
    'item.attributes.gears (high)' -> 'Gears (more is better)'."""
    if name in LABELS:
        return LABELS[name]
    text = name
    for raw, words in ((" (high)", " (more is better)"), (" (low)", " (less is better)")):
        text = text.replace(raw, words)
    head, sep, tail = text.partition(" ")
    return label(head) + (sep + tail if sep else "")


def filter_words(entry: str, passed: bool) -> str:
    """'max_price: 950 EUR > 800 EUR' -> 'over your highest price (950 EUR > 800 EUR)'."""
    name, sep, reason = str(entry).partition(": ")
    table = PASSED if passed else FAILED
    if name in table:
        return table[name] + (f" ({reason})" if sep and reason else "")
    if name.startswith("item."):                    # an attribute condition: already a sentence
        return ("meets: " if passed else "does not meet: ") + contribution_words(str(entry))
    return label(name) + (f" ({reason})" if sep and reason else "")


def score_scale(rules: Any) -> float | None:
    """The highest score an offer can reach under these rules: each active preference adds at
    most its weight (device/ranking.py; brands_disliked and negative attribute weights only take
    away). None when the rules are unknown."""
    if not isinstance(rules, dict) or not isinstance(rules.get("weights"), dict):
        return None
    w = rules["weights"]
    brands = rules.get("brands") if isinstance(rules.get("brands"), dict) else {}

    def num(v: Any) -> float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
    best = sum(max(0.0, num(w.get(k))) for k in ("price", "known_supplier", "reputation", "delivery"))
    if brands.get("liked"):
        best += max(0.0, num(w.get("brands_liked")))
    for pref in w.get("attributes") or []:
        if isinstance(pref, dict):
            best += max(0.0, num(pref.get("weight")))
    return best


def _text(value: Any) -> Markup:
    return escape(for_page(str(value)))


def fallback_money(amount: Any, currency: Any) -> str:
    """The server's own text for a price: the amount with the currency's usual decimals (ISO
    4217 minor units) and its code after it, '900.50 EUR': unambiguous in every locale, and what
    the page shows where no script runs."""
    code = str(currency or "")
    try:
        value = Decimal(str(amount)).quantize(Decimal(1).scaleb(-MINOR_UNITS.get(code, 2)))
    except (InvalidOperation, ValueError):
        return f"{amount} {code}".strip()
    return f"{value:f} {code}".strip()


# ISO 4217 currencies whose minor unit is not 2 digits; every other one has 2.
MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                     "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4, "UYW": 4,
}


def money(amount: Any, currency: Any) -> Markup:
    """A price for the page: <data> with the amount and the currency code for static/local.js
    (Intl.NumberFormat with that currency in the phone's locale), the fallback text inside."""
    if amount is None:
        return Markup("")
    return Markup('<data class="money" value="{v}" data-currency="{c}">{t}</data>').format(
        v=_text(amount), c=_text(currency or ""), t=_text(fallback_money(amount, currency)))


def number(value: Any, signed: bool = False) -> Markup:
    """A score or contribution with two decimals, shown in the phone's locale by local.js."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _text(value)
    text = f"{v:+.2f}" if signed and round(v, 2) != 0 else f"{v:.2f}"
    return Markup('<data class="number" value="{v}"{s}>{t}</data>').format(
        v=repr(v), s=Markup(' data-signed="1"') if signed else Markup(""), t=text)


def utc_iso(ts: Any) -> str:
    """Seconds since the epoch -> '2026-12-01T10:15:00Z' (the <time datetime> value)."""
    try:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def utc_text(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def when(ts: Any) -> Markup:
    """A moment for the page: <time> with its UTC value for local.js (Intl.DateTimeFormat in the
    phone's locale and time zone), the UTC text inside as the fallback."""
    iso = utc_iso(ts) if ts else ""
    if not iso:
        return Markup("–")
    return Markup('<time datetime="{i}" data-local="datetime">{t}</time>').format(i=iso, t=utc_text(ts))


def day(text: Any) -> Markup:
    """A calendar date 'YYYY-MM-DD' (no time zone: it is the same day everywhere)."""
    s = str(text or "")
    try:
        datetime.strptime(s, "%Y-%m-%d")
    except ValueError:
        return _text(s)
    return Markup('<time datetime="{d}" data-local="date">{d}</time>').format(d=s)


def vendor_names() -> dict[str, str]:
    """slug -> the name the vendor gives itself, read once per request."""
    names = g.get("vendor_names")
    if names is None:
        rows = read("vendors", {}, []) or []
        names = {str(v.get("vendor")): str(v.get("name")) for v in rows
                 if isinstance(v, dict) and v.get("name")}
        g.vendor_names = names
    return names


def vendor(slug: Any) -> Markup:
    """A vendor by its name, its slug on hover (and for screen readers in the title): the name
    is the vendor's own words, so it goes through for_page like any vendor text."""
    s = str(slug or "")
    name = vendor_names().get(s) or s
    return Markup('<span class="vendor" title="{s}" data-vendor="{s}">{n}</span>').format(
        s=_text(s), n=_text(name))


def plural(n: Any, one: str, many: str | None = None) -> str:
    try:
        count = int(n)
    except (TypeError, ValueError):
        count = 0
    return f"{count} {one if count == 1 else (many or one + 's')}"


TEMPLATE_FILTERS: dict[str, Any] = {
    "label": label, "labels": labels, "status_words": status_words, "money": money,
    "number": number, "when": when, "day": day, "vendor": vendor, "utc_iso": utc_iso,
    "contribution_words": contribution_words, "passed_words": lambda e: filter_words(e, True),
    "failed_words": lambda e: filter_words(e, False),
}
TEMPLATE_GLOBALS: dict[str, Any] = {"vendor": vendor, "plural": plural, "money": money}


def install_display(bp: Any) -> None:
    """Make the display helpers available to every template (called on a blueprint that is
    always registered, so the app factory need not know about them)."""
    for name, fn in TEMPLATE_FILTERS.items():
        bp.add_app_template_filter(fn, name)
    for name, fn in TEMPLATE_GLOBALS.items():
        bp.add_app_template_global(fn, name)
