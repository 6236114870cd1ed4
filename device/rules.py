"""The person's rules for offers: filters (what is eligible) and weights (what is better).

Why data and not code: the rules are a JSON object the person edits from the phone or the CLI
and the store keeps sealed. They are never evaluated as Python; attribute conditions use a small
fixed set of operators over dotted paths into the offer facts. `validate_rules` checks everything
(unknown keys, types, ranges, list sizes, syntax) and `compile_rules` turns the result once into
frozen, pre-processed values (sets, parsed paths, casefolded brands), so checking an offer never
re-parses anything. Everything here is pure. docs/rules.md is the reference for the format.
"""
from __future__ import annotations

import copy
import logging
import math
import operator
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from vrm_protocol.messages import CURRENCY_RE, SLUG_RE, SLUG_RULE

log = logging.getLogger(__name__)

VERSION = 1
MAX_LIST = 100              # most entries in any list of values
MAX_CONDITIONS = 50         # most attribute conditions / attribute preferences
MAX_TEXT = 200              # longest string value (brand, attribute value)
MAX_AMOUNT = 1e12           # largest money amount
MAX_WEIGHT = 100.0          # |weight| bound
MAX_VALIDITY_S = 366 * 86400
MAX_DAYS = 3650
MAX_DEPTH = 32              # deepest nesting of objects and lists (the protocol's JSON bound)

OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "exists")
PREFERENCES = ("high", "low", "equals")
WEIGHT_KEYS = ("price", "known_supplier", "reputation", "delivery", "brands_liked", "brands_disliked")
FILTER_KEYS = ("max_price", "currencies", "regions", "min_validity_s", "max_delivery_days",
               "require_terms_accepted", "vendors_allow", "vendors_block", "categories", "attributes")
ATTRIBUTES_PREFIX = "item.attributes."
# Dotted paths into OfferFacts that conditions and preferences may name (plus item.attributes.<key>).
FACT_PATHS: Mapping[str, str] = MappingProxyType({
    "vendor": "vendor", "category": "category", "price": "price", "currency": "currency",
    "valid_until": "valid_until", "delivery_days": "delivery_days", "region": "region",
    "terms_accepted": "terms_accepted", "item.name": "item_name", "item.brand": "brand",
})

_REGION_RE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?\Z")   # ISO 3166-1 alpha-2 or 3166-2
_MISSING = object()
_SYMBOL = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
           "in": "one of", "not_in": "none of"}


class RulesError(ValueError):
    """Rules the box refuses; `.path` names the bad entry, e.g. "filters.max_price.amount"."""

    def __init__(self, path: str, value: Any, reason: str) -> None:
        self.path = path
        self.value = value
        self.reason = reason
        shown = _show(value) if value is not _MISSING else "(missing)"
        super().__init__(f"rules {path or '(root)'} = {shown}: {reason}")


# ------------------------------------------------------------------------------- formatting
def fmt_number(x: float) -> str:
    """950.0 -> '950', 799.5 -> '799.5': short, for human reasons."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4f}".rstrip("0").rstrip(".")


def _show(value: Any, limit: int = 60, depth: int = 0) -> str:
    """A short rendering for messages; nesting past 3 levels is shown as [...] (so a value nested
    thousands deep costs no recursion)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return fmt_number(value)
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[:limit] + "...")
    if isinstance(value, (list, tuple)):
        if depth >= 3:
            return "[...]" if value else "[]"
        inner = ", ".join(_show(v, 30, depth + 1) for v in list(value)[:8])
        return f"[{inner}{', ...' if len(value) > 8 else ''}]"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{...}" if value else "{}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def nesting_exceeds(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and lists in `value` nest deeper than `limit` (the outermost object is
    level 1). Iterative: rules nested thousands deep are refused, not a RecursionError."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        v, level = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        if level > limit:
            return True
        stack.extend((c, level + 1) for c in children)
    return False


# ------------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class Money:
    amount: float
    currency: str


@dataclass(frozen=True)
class OfferFacts:
    """What the rules may look at in one offer: flat, typed, already verified by the protocol."""

    offer_id: str
    intent_id: str
    vendor: str
    category: str
    price: float
    currency: str
    valid_until: int
    delivery_days: int | None
    region: str | None
    terms_accepted: bool
    brand: str | None
    item_name: str
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    received_at: int = 0

    @classmethod
    def from_offer(cls, offer_id: str, body: Mapping[str, Any], category: str,
                   received_at: int) -> "OfferFacts":
        """From the dict of a verified `vrm_protocol.Offer` (messages.body_to_dict)."""
        try:
            item = body["item"]
            return cls(
                offer_id=offer_id, intent_id=str(body["intent"]), vendor=str(body["vendor"]),
                category=category, price=float(body["price"]), currency=str(body["currency"]),
                valid_until=int(body["valid_until"]), delivery_days=body.get("delivery_days"),
                region=body.get("region"),
                terms_accepted=body["terms_response"]["decision"] == "accept",
                brand=item.get("brand"), item_name=str(item.get("name", "")),
                attributes=dict(item.get("attributes") or {}), received_at=int(received_at))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"offer {offer_id}: not an offer body ({exc!r})") from exc


@dataclass(frozen=True)
class Context:
    """What the box knows beyond the offer: the person's suppliers, vendor reputation, budget."""

    suppliers: frozenset[str] = frozenset()
    reputation: Mapping[str, float] = field(default_factory=dict, hash=False)
    budget: Money | None = None


# ------------------------------------------------------------------------------- defaults
def default_rules() -> dict[str, Any]:
    """Sensible starting rules: vendors must accept the person's terms; price counts most."""
    return {
        "version": VERSION,
        "filters": {"require_terms_accepted": True},
        "weights": {"price": 1.0, "known_supplier": 0.3, "reputation": 0.3, "delivery": 0.2,
                    "brands_liked": 0.2, "brands_disliked": 0.5, "attributes": []},
        "brands": {"liked": [], "disliked": []},
    }


_DEFAULT_WEIGHTS = default_rules()["weights"]


# ------------------------------------------------------------------------------- validation
def _obj(value: Any, path: str, allowed: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RulesError(path, value, "must be an object")
    allowed = tuple(allowed)
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            sub = f"{path}.{key}" if path else str(key)
            raise RulesError(sub, value[key], f"unknown key (allowed: {', '.join(allowed)})")
    return value


def _number(value: Any, path: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RulesError(path, value, "must be a number")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RulesError(path, value, f"must be between {fmt_number(lo)} and {fmt_number(hi)}")
    return float(value)


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RulesError(path, value, "must be an integer")
    if not lo <= value <= hi:
        raise RulesError(path, value, f"must be between {lo} and {hi}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise RulesError(path, value, "must be true or false")
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise RulesError(path, value, "must be a string")
    if not value.strip() or len(value) > MAX_TEXT:
        raise RulesError(path, value, f"must be 1..{MAX_TEXT} characters")
    return value


def _list(value: Any, path: str, check: Callable[[Any, str], Any], limit: int = MAX_LIST) -> list[Any]:
    """Checked, de-duplicated (first wins) list."""
    if not isinstance(value, list):
        raise RulesError(path, value, "must be a list")
    if len(value) > limit:
        raise RulesError(path, f"{len(value)} entries", f"must have at most {limit} entries")
    out: list[Any] = []
    for i, v in enumerate(value):
        v = check(v, f"{path}[{i}]")
        if v not in out:
            out.append(v)
    return out


def _slug(value: Any, path: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise RulesError(path, value, SLUG_RULE)
    return value


def _currency(value: Any, path: str) -> str:
    if not isinstance(value, str) or not CURRENCY_RE.match(value):
        raise RulesError(path, value, "must be an ISO 4217 code such as EUR")
    return value


def _region(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _REGION_RE.match(value):
        raise RulesError(path, value, "must be an ISO 3166 code such as GB or GB-LND")
    return value


def _scalar(value: Any, path: str) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise RulesError(path, value, f"must be at most {MAX_TEXT} characters")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise RulesError(path, value, "must be a finite number")
        return value
    raise RulesError(path, value, "must be a string, number or boolean")


def _path(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise RulesError(path, value, "must be a string")
    if value in FACT_PATHS:
        return value
    if value.startswith(ATTRIBUTES_PREFIX) and 0 < len(value) - len(ATTRIBUTES_PREFIX) <= 64:
        return value
    raise RulesError(path, value, "must be item.attributes.<key> or one of "
                     + ", ".join(FACT_PATHS))


def _condition(value: Any, path: str) -> dict[str, Any]:
    _obj(value, path, ("path", "op", "value"))
    if "path" not in value:
        raise RulesError(f"{path}.path", _MISSING, "is required")
    if "op" not in value:
        raise RulesError(f"{path}.op", _MISSING, "is required")
    out: dict[str, Any] = {"path": _path(value["path"], f"{path}.path")}
    op = value["op"]
    if op not in OPS:
        raise RulesError(f"{path}.op", op, f"must be one of {', '.join(OPS)}")
    out["op"] = op
    vpath = f"{path}.value"
    if op == "exists":
        out["value"] = _bool(value.get("value", True), vpath)
    elif "value" not in value:
        raise RulesError(vpath, _MISSING, f"is required for op {op}")
    elif op in ("in", "not_in"):
        items = _list(value["value"], vpath, _scalar)
        if not items:
            raise RulesError(vpath, value["value"], "must not be empty")
        out["value"] = items
    elif op in ("lt", "le", "gt", "ge"):
        out["value"] = _number(value["value"], vpath, -1e15, 1e15)
    else:
        out["value"] = _scalar(value["value"], vpath)
    return out


def _preference(value: Any, path: str) -> dict[str, Any]:
    _obj(value, path, ("path", "prefer", "value", "weight"))
    for key in ("path", "prefer", "weight"):
        if key not in value:
            raise RulesError(f"{path}.{key}", _MISSING, "is required")
    out: dict[str, Any] = {"path": _path(value["path"], f"{path}.path")}
    prefer = value["prefer"]
    if prefer not in PREFERENCES:
        raise RulesError(f"{path}.prefer", prefer, f"must be one of {', '.join(PREFERENCES)}")
    out["prefer"] = prefer
    if prefer == "equals":
        if "value" not in value:
            raise RulesError(f"{path}.value", _MISSING, "is required for prefer equals")
        out["value"] = _scalar(value["value"], f"{path}.value")
    elif "value" in value:
        raise RulesError(f"{path}.value", value["value"], "only allowed with prefer equals")
    out["weight"] = _number(value["weight"], f"{path}.weight", -MAX_WEIGHT, MAX_WEIGHT)
    return out


def _filters(value: Any) -> dict[str, Any]:
    p = "filters"
    _obj(value, p, FILTER_KEYS)
    out: dict[str, Any] = {}
    if "max_price" in value:
        mp = _obj(value["max_price"], f"{p}.max_price", ("amount", "currency"))
        for key in ("amount", "currency"):
            if key not in mp:
                raise RulesError(f"{p}.max_price.{key}", _MISSING, "is required")
        out["max_price"] = {"amount": _number(mp["amount"], f"{p}.max_price.amount", 0, MAX_AMOUNT),
                            "currency": _currency(mp["currency"], f"{p}.max_price.currency")}
    if "currencies" in value:
        out["currencies"] = _list(value["currencies"], f"{p}.currencies", _currency)
    if "regions" in value:
        out["regions"] = _list(value["regions"], f"{p}.regions", _region)
    if "min_validity_s" in value:
        out["min_validity_s"] = _int(value["min_validity_s"], f"{p}.min_validity_s", 0, MAX_VALIDITY_S)
    if "max_delivery_days" in value:
        out["max_delivery_days"] = _int(value["max_delivery_days"], f"{p}.max_delivery_days", 0, MAX_DAYS)
    if "require_terms_accepted" in value:
        out["require_terms_accepted"] = _bool(value["require_terms_accepted"],
                                              f"{p}.require_terms_accepted")
    for key in ("vendors_allow", "vendors_block", "categories"):
        if key in value:
            out[key] = _list(value[key], f"{p}.{key}", _slug)
    both = set(out.get("vendors_allow", ())) & set(out.get("vendors_block", ()))
    if both:
        i = out["vendors_block"].index(sorted(both)[0])
        raise RulesError(f"{p}.vendors_block[{i}]", sorted(both)[0], "is also in vendors_allow")
    if "attributes" in value:
        out["attributes"] = _list(value["attributes"], f"{p}.attributes", _condition, MAX_CONDITIONS)
    return out


def _weights(value: Any) -> dict[str, Any]:
    p = "weights"
    _obj(value, p, WEIGHT_KEYS + ("attributes",))
    out: dict[str, Any] = {}
    for key in WEIGHT_KEYS:
        out[key] = (_number(value[key], f"{p}.{key}", 0, MAX_WEIGHT) if key in value
                    else _DEFAULT_WEIGHTS[key])
    out["attributes"] = (_list(value["attributes"], f"{p}.attributes", _preference, MAX_CONDITIONS)
                         if "attributes" in value else [])
    return out


def _brands(value: Any) -> dict[str, Any]:
    _obj(value, "brands", ("liked", "disliked"))
    out = {key: _list(value.get(key, []), f"brands.{key}", _text) for key in ("liked", "disliked")}
    liked = {b.casefold() for b in out["liked"]}
    for i, b in enumerate(out["disliked"]):
        if b.casefold() in liked:
            raise RulesError(f"brands.disliked[{i}]", b, "is also in brands.liked")
    return out


def validate_rules(data: object) -> dict[str, Any]:
    """Check rules completely and return them normalised (all weights present, lists de-duplicated).

    Raises RulesError naming the first bad entry. Absent filters stay absent (= not applied).
    """
    if nesting_exceeds(data):   # before anything walks the value recursively
        raise RulesError("", data, f"nested deeper than {MAX_DEPTH} levels")
    _obj(data, "", ("version", "filters", "weights", "brands"))
    assert isinstance(data, dict)
    version = data.get("version", VERSION)
    if isinstance(version, bool) or version != VERSION:
        raise RulesError("version", version, f"must be {VERSION}")
    return {
        "version": VERSION,
        "filters": _filters(data.get("filters", {})),
        "weights": _weights(data.get("weights", {})),
        "brands": _brands(data.get("brands", {})),
    }


# ------------------------------------------------------------------------------- compiled form
def _norm(value: Any) -> tuple[str, Any]:
    """Comparison key: strings casefolded, booleans distinct from numbers, ints == floats."""
    if isinstance(value, str):
        return ("s", value.casefold())
    if isinstance(value, bool):
        return ("b", value)
    return ("n", float(value))


def _getter(path: str) -> Callable[["OfferFacts"], Any]:
    """A parsed path: returns the fact value, or _MISSING."""
    if path.startswith(ATTRIBUTES_PREFIX):
        key = path[len(ATTRIBUTES_PREFIX):]
        return lambda f: f.attributes.get(key, _MISSING)
    attr = FACT_PATHS[path]

    def get(f: "OfferFacts") -> Any:
        v = getattr(f, attr)
        return _MISSING if v is None else v
    return get


_ORDER: Mapping[str, Callable[[Any, Any], bool]] = MappingProxyType({
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Condition:
    """One attribute filter, pre-parsed: a getter, the operator and the prepared operand."""

    name: str                   # the path, shown in explanations
    op: str
    value: Any
    get: Callable[[OfferFacts], Any] = field(repr=False, compare=False)
    keys: frozenset = frozenset()   # normalised operand(s) for eq/ne/in/not_in

    def test(self, facts: OfferFacts) -> str | None:
        """None when the condition holds, else a short reason."""
        v = self.get(facts)
        if self.op == "exists":
            present = v is not _MISSING
            if present == self.value:
                return None
            return f"{self.name}: {'missing' if self.value else 'present'}, need {'present' if self.value else 'absent'}"
        if v is _MISSING:
            return f"{self.name}: missing"
        if self.holds(facts):
            return None
        need = f"need {_SYMBOL[self.op]} {_show(self.value)}"
        if self.op in _ORDER and not _is_number(v):
            return f"{self.name}: {_show(v)} is not a number, {need}"
        return f"{self.name}: {_show(v)}, {need}"

    def holds(self, facts: OfferFacts) -> bool:
        """The verdict of `test` without building a reason (ranking asks it for every offer)."""
        v = self.get(facts)
        op = self.op
        if op == "exists":
            return (v is not _MISSING) == self.value
        if v is _MISSING:
            return False
        compare = _ORDER.get(op)
        if compare is not None:
            return _is_number(v) and compare(v, self.value)
        values = v if isinstance(v, list) else [v]
        try:
            hit = any(_norm(x) in self.keys for x in values)
        except TypeError:           # unhashable junk in a vendor's attribute list
            hit = False
        return hit if op in ("eq", "in") else not hit


@dataclass(frozen=True)
class AttributePreference:
    name: str                   # unique label in explanations, e.g. "item.attributes.gears (high)"
    prefer: str                 # high | low | equals
    weight: float
    get: Callable[[OfferFacts], Any] = field(repr=False, compare=False)
    key: tuple[str, Any] | None = None    # normalised value for prefer == equals

    def number(self, facts: OfferFacts) -> float | None:
        v = self.get(facts)
        return float(v) if _is_number(v) else None

    def matches(self, facts: OfferFacts) -> bool:
        v = self.get(facts)
        values = v if isinstance(v, list) else [v]
        try:
            return any(x is not _MISSING and _norm(x) == self.key for x in values)
        except TypeError:
            return False


@dataclass(frozen=True)
class CompiledRules:
    """Rules ready to apply: validated once, everything an offer check needs pre-computed."""

    source: Mapping[str, Any] = field(repr=False, compare=False, hash=False)
    require_terms_accepted: bool = False
    max_price: Money | None = None
    currencies: frozenset[str] | None = None
    regions: tuple[str, ...] | None = None
    min_validity_s: int | None = None
    max_delivery_days: int | None = None
    vendors_allow: frozenset[str] | None = None
    vendors_block: frozenset[str] = frozenset()
    categories: frozenset[str] | None = None
    conditions: tuple[Condition, ...] = ()
    w_price: float = 0.0
    w_known_supplier: float = 0.0
    w_reputation: float = 0.0
    w_delivery: float = 0.0
    w_brands_liked: float = 0.0
    w_brands_disliked: float = 0.0
    preferences: tuple[AttributePreference, ...] = ()
    brands_liked: frozenset[str] = frozenset()
    brands_disliked: frozenset[str] = frozenset()

    def passes(self, f: OfferFacts, ctx: Context, now: int) -> bool:
        """True exactly when `check` fails nothing, without building any reason (fast path)."""
        if not f.valid_until > now:
            return False
        if self.require_terms_accepted and not f.terms_accepted:
            return False
        for limit in (self.max_price, ctx.budget):
            if limit is not None and (f.currency != limit.currency or f.price > limit.amount):
                return False
        if self.currencies is not None and f.currency not in self.currencies:
            return False
        if self.regions is not None:
            region = (f.region or "").upper()
            if not region or not any(region == r or region.startswith(r + "-") for r in self.regions):
                return False
        if self.min_validity_s is not None and not f.valid_until - now >= self.min_validity_s:
            return False
        if self.max_delivery_days is not None:
            d = f.delivery_days
            if d is None or not d <= self.max_delivery_days:
                return False
        if self.vendors_allow is not None and f.vendor not in self.vendors_allow:
            return False
        if self.vendors_block and f.vendor in self.vendors_block:
            return False
        if self.categories is not None and f.category not in self.categories:
            return False
        for cond in self.conditions:
            if not cond.holds(f):
                return False
        return True

    def stays_eligible_until(self, f: OfferFacts) -> int:
        """The first (integer) time at which an offer that passes now stops passing: the only
        filters that change with time are not_expired and min_validity_s."""
        if self.min_validity_s is None:
            return f.valid_until
        return min(f.valid_until, f.valid_until - self.min_validity_s + 1)

    def check(self, f: OfferFacts, ctx: Context, now: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(names of filters passed, "name: reason" of filters failed); every filter is tried."""
        passed: list[str] = []
        failed: list[str] = []

        def verdict(name: str, reason: str | None) -> None:
            if reason is None:
                passed.append(name)
            else:
                failed.append(f"{name}: {reason}")

        verdict("not_expired", None if f.valid_until > now
                else f"expired {fmt_number(now - f.valid_until)} s ago")
        if self.require_terms_accepted:
            verdict("require_terms_accepted", None if f.terms_accepted
                    else "the vendor did not accept your terms")
        for name, limit in (("max_price", self.max_price), ("budget", ctx.budget)):
            if limit is None:
                continue
            if f.currency != limit.currency:
                verdict(name, f"price in {f.currency}, limit in {limit.currency} (no conversion)")
            elif f.price > limit.amount:
                verdict(name, f"{fmt_number(f.price)} {f.currency} > {fmt_number(limit.amount)} "
                              f"{limit.currency}")
            else:
                verdict(name, None)
        if self.currencies is not None:
            verdict("currencies", None if f.currency in self.currencies
                    else f"{f.currency} not in {_show(sorted(self.currencies))}")
        if self.regions is not None:
            region = (f.region or "").upper()
            if not region:
                verdict("regions", "no region given")
            else:
                ok = any(region == r or region.startswith(r + "-") for r in self.regions)
                verdict("regions", None if ok else f"{f.region} not in {_show(list(self.regions))}")
        if self.min_validity_s is not None:
            left = f.valid_until - now
            verdict("min_validity_s", None if left >= self.min_validity_s
                    else f"valid {fmt_number(max(left, 0))} s more, need {self.min_validity_s} s")
        if self.max_delivery_days is not None:
            d = f.delivery_days
            verdict("max_delivery_days", "delivery time not given" if d is None
                    else None if d <= self.max_delivery_days
                    else f"{d} days > {self.max_delivery_days} days")
        if self.vendors_allow is not None:
            verdict("vendors_allow", None if f.vendor in self.vendors_allow
                    else f"{f.vendor} is not in the allow list")
        if self.vendors_block:
            verdict("vendors_block", None if f.vendor not in self.vendors_block
                    else f"{f.vendor} is blocked")
        if self.categories is not None:
            verdict("categories", None if f.category in self.categories
                    else f"{f.category} not in {_show(sorted(self.categories))}")
        for cond in self.conditions:
            reason = cond.test(f)
            if reason is None:
                passed.append(cond.name)
            else:
                failed.append(reason)
        return tuple(passed), tuple(failed)


def compile_rules(data: Mapping[str, Any]) -> CompiledRules:
    """Validate and pre-process once; the result is what evaluate/rank use for every offer."""
    r = validate_rules(copy.deepcopy(dict(data)) if isinstance(data, Mapping) else data)
    flt, w, brands = r["filters"], r["weights"], r["brands"]
    conditions = []
    for c in flt.get("attributes", []):
        values = c["value"] if c["op"] in ("in", "not_in") else [c["value"]]
        keys = frozenset(_norm(v) for v in values) if c["op"] in ("eq", "ne", "in", "not_in") else frozenset()
        conditions.append(Condition(c["path"], c["op"], c["value"], _getter(c["path"]), keys))
    prefs = []
    seen: dict[str, int] = {}
    for p in w["attributes"]:
        label = (f"{p['path']} = {_show(p['value'])}" if p["prefer"] == "equals"
                 else f"{p['path']} ({p['prefer']})")
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} #{seen[label]}"
        prefs.append(AttributePreference(label, p["prefer"], p["weight"], _getter(p["path"]),
                                         _norm(p["value"]) if p["prefer"] == "equals" else None))
    mp = flt.get("max_price")
    return CompiledRules(
        source=MappingProxyType(r),
        require_terms_accepted=flt.get("require_terms_accepted", False),
        max_price=Money(mp["amount"], mp["currency"]) if mp else None,
        currencies=frozenset(flt["currencies"]) if "currencies" in flt else None,
        regions=tuple(flt["regions"]) if "regions" in flt else None,
        min_validity_s=flt.get("min_validity_s"),
        max_delivery_days=flt.get("max_delivery_days"),
        vendors_allow=frozenset(flt["vendors_allow"]) if flt.get("vendors_allow") else None,
        vendors_block=frozenset(flt.get("vendors_block", ())),
        categories=frozenset(flt["categories"]) if flt.get("categories") else None,
        conditions=tuple(conditions),
        w_price=w["price"], w_known_supplier=w["known_supplier"], w_reputation=w["reputation"],
        w_delivery=w["delivery"], w_brands_liked=w["brands_liked"],
        w_brands_disliked=w["brands_disliked"],
        preferences=tuple(prefs),
        brands_liked=frozenset(b.casefold() for b in brands["liked"]),
        brands_disliked=frozenset(b.casefold() for b in brands["disliked"]),
    )
