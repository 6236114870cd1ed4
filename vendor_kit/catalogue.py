"""The vendor's catalogue and pricing rules: loaded once, validated strictly, then pure.

Why strict: a typo in a price file must stop the worker at start with a message naming the
entry and the field, not silently offer the wrong thing to people's boxes.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

from vrm_protocol import Identity, Intent, Item, Offer, ProtocolError, TermsResponse, sign
from vrm_protocol.codec import MAX_LIFETIME, MAX_MESSAGE_BYTES
from vrm_protocol.messages import MAX_STR, check_currency, check_slug, parse_dataclass

log = logging.getLogger(__name__)

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "prefix", "in")
MAX_AMOUNT = 10 ** 15      # the protocol's bound on a number: a price above it is refused by every box
DEFAULT_OFFER_VALIDITY_S = 7 * 24 * 3600
CENT = Decimal("0.01")
_TOP_KEYS = {"currency", "region", "accept_terms", "offer_validity_s", "items", "rules"}
_ITEM_KEYS = {"category", "name", "sku", "brand", "description", "price", "delivery_days", "attributes"}
_RULE_KEYS = {"when", "discount_percent", "add", "category"}


class CatalogueError(ValueError):
    """The catalogue file is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class CatalogueItem:
    category: str
    name: str
    sku: str
    price: float
    brand: str | None = None
    description: str | None = None
    delivery_days: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def as_offer_item(self) -> Item:
        return Item(name=self.name, sku=self.sku, brand=self.brand, description=self.description,
                    attributes=dict(self.attributes))


@dataclass(frozen=True)
class Condition:
    attribute: str
    op: str
    value: Any

    def matches(self, attributes: dict[str, Any]) -> bool:
        """False when the attribute is absent or of a type the operator cannot compare."""
        if self.attribute not in attributes:
            return False
        actual = attributes[self.attribute]
        if self.op == "eq":
            return _same(actual, self.value)
        if self.op == "ne":
            return not _same(actual, self.value)
        if self.op == "in":
            return any(_same(actual, v) for v in self.value)
        if self.op == "prefix":
            return isinstance(actual, str) and actual.upper().startswith(self.value.upper())
        if not _is_number(actual):
            return False
        return {"lt": actual < self.value, "lte": actual <= self.value,
                "gt": actual > self.value, "gte": actual >= self.value}[self.op]


@dataclass(frozen=True)
class Rule:
    """When `when` holds for the intent's attributes, take `discount_percent` off, then `add`."""

    when: Condition
    discount_percent: float = 0.0
    add: float = 0.0
    category: str | None = None   # only items of this category, if set


@dataclass(frozen=True)
class Catalogue:
    currency: str
    items: tuple[CatalogueItem, ...]
    rules: tuple[Rule, ...] = ()
    region: str | None = None
    accept_terms: tuple[str, ...] | Literal["*"] = "*"
    offer_validity_s: int = DEFAULT_OFFER_VALIDITY_S

    @classmethod
    def load(cls, path: Path | str) -> "Catalogue":
        """Read a YAML or JSON file (by suffix; YAML otherwise) and validate it."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogueError(f"cannot read catalogue {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CatalogueError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                                 f"{exc}") from exc
        return parse_catalogue(data)

    def accepts(self, terms_id: str) -> bool:
        return self.accept_terms == "*" or terms_id in self.accept_terms

    def categories(self) -> set[str]:
        return {i.category for i in self.items}


# ------------------------------------------------------------------------------ pure pricing
def _is_number(v: Any) -> bool:
    """A JSON number: not a bool, not NaN/inf. Integers of any size count (math.isfinite would
    raise OverflowError on 10**400, so ints never go through it)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and math.isfinite(v)


def _same(a: Any, b: Any) -> bool:
    """Equality as JSON means it: true is not 1 and false is not 0 (Python says they are)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def price_for(item: CatalogueItem, intent_attributes: dict[str, Any], rules: tuple[Rule, ...] | list[Rule]) -> float:
    """The item's price for this intent: rules applied in order, never below 0, cents rounded."""
    price = _dec(item.price)   # decimal arithmetic: 99.99 at 50 % off is 50.00, not 49.99
    for rule in rules:
        if rule.category is not None and rule.category != item.category:
            continue
        if not rule.when.matches(intent_attributes):
            continue
        price = price * (1 - _dec(rule.discount_percent) / 100) + _dec(rule.add)
    return float(max(price, Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP))


def _dec(v: float) -> Decimal:
    return Decimal(repr(float(v)))


def budget_of(intent: Intent, currency: str) -> int | float | None:
    """The intent's `budget_max`, if it has one in our currency (or names no currency).
    Returned as given (not float()): a huge integer compares fine but would overflow a float."""
    budget = intent.attributes.get("budget_max")
    if not _is_number(budget):
        return None
    their_currency = intent.attributes.get("currency")
    if their_currency is not None and their_currency != currency:
        return None
    return budget


def offers_for(catalogue: Catalogue, intent: Intent) -> list[tuple[CatalogueItem, float]]:
    """Items of the intent's category, priced, minus those over the intent's budget."""
    budget = budget_of(intent, catalogue.currency)
    out = []
    for item in catalogue.items:
        if item.category != intent.category:
            continue
        price = price_for(item, intent.attributes, catalogue.rules)
        if budget is not None and price > budget:
            continue
        if price > MAX_AMOUNT:  # several `add` rules can sum past the bound: no box would accept it
            log.warning("item %s priced %s for intent %s: above %s, not offered", item.sku, price,
                        intent.intent, MAX_AMOUNT)
            continue
        out.append((item, price))
    return out


# ------------------------------------------------------------------------------ validation
def _fail(where: str, detail: str) -> CatalogueError:
    return CatalogueError(f"{where}: {detail}")


def _unknown_keys(data: dict, allowed: set[str], where: str) -> None:
    extra = sorted(map(str, set(data) - allowed))  # str(): YAML keys may be ints, dates, bools ...
    if extra:
        raise _fail(where, f"unknown field(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def _number(data: dict, key: str, where: str, *, minimum: float | None = None,
            maximum: float | None = None, required: bool = True, default: float = 0.0) -> float:
    if key not in data:
        if required:
            raise _fail(where, f"field '{key}' is required")
        return default
    v = data[key]
    if not _is_number(v):
        raise _fail(where, f"field '{key}' must be a number, got {_short(v)}")
    if minimum is not None and v < minimum:
        raise _fail(where, f"field '{key}' must be >= {minimum}, got {_short(v)}")
    if maximum is not None and v > maximum:
        raise _fail(where, f"field '{key}' must be <= {maximum}, got {_short(v)}")
    return float(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _item(data: Any, index: int, seen_skus: set[str]) -> CatalogueItem:
    where = f"items[{index}]"
    if not isinstance(data, dict):
        raise _fail(where, "must be a mapping")
    if isinstance(data.get("sku"), str):
        where = f"items[{index}] (sku {data['sku']!r})"
    _unknown_keys(data, _ITEM_KEYS, where)
    for key in ("category", "name", "sku"):
        if key not in data:
            raise _fail(where, f"field '{key}' is required")
        if not isinstance(data[key], str) or not data[key].strip():
            raise _fail(where, f"field '{key}' must be a non-empty string")
    try:
        check_slug(data["category"], "category")
    except ProtocolError as exc:
        raise _fail(where, f"field 'category' {data['category']!r}: {exc.detail}") from exc
    if data["sku"] in seen_skus:
        raise _fail(where, f"field 'sku' {data['sku']!r} is used by an earlier item")
    seen_skus.add(data["sku"])
    price = _number(data, "price", where, minimum=0, maximum=MAX_AMOUNT)
    delivery = data.get("delivery_days")
    if delivery is not None and (not isinstance(delivery, int) or isinstance(delivery, bool) or delivery < 0):
        raise _fail(where, f"field 'delivery_days' must be a non-negative integer, got {delivery!r}")
    for key in ("brand", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _fail(where, f"field '{key}' must be a string")
    attributes = data.get("attributes") or {}
    if isinstance(attributes, dict) and not all(isinstance(k, str) for k in attributes):
        raise _fail(where, f"field 'attributes': names must be strings, got "
                           f"{', '.join(_short(k) for k in attributes if not isinstance(k, str))}")
    item = CatalogueItem(category=data["category"], name=data["name"], sku=data["sku"], price=price,
                         brand=data.get("brand"), description=data.get("description"),
                         delivery_days=delivery, attributes=attributes)
    try:  # the protocol's own parser: whatever passes here fits in an Offer
        parse_dataclass(Item, _drop_none({"name": item.name, "sku": item.sku, "brand": item.brand,
                                          "description": item.description, "attributes": attributes}))
    except ProtocolError as exc:
        raise _fail(where, exc.detail) from exc
    return item


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


_SIZE_PROBE_KEY = Identity.from_seed(bytes(32))  # signs throwaway offers only, to measure them


def _check_offer_size(item: CatalogueItem, currency: str, region: str | None, where: str) -> None:
    """Sign the largest offer this item can produce (longest ids, slugs and price text): an
    item that does not fit in one message would make every intent of its category fail."""
    body = Offer(intent="i" * 64, vendor="v" * 63, item=item.as_offer_item(), price=0.30000000000000004e15,
                 currency=currency, valid_until=2 ** 40, region=region, delivery_days=item.delivery_days,
                 terms_response=TermsResponse(id="t" * 63, sha256="h" * 43, decision="accept"))
    try:
        token = sign(_SIZE_PROBE_KEY, body, now=2 ** 40 - 1, ttl=1, msg_id="m" * 64)
    except ProtocolError as exc:
        raise _fail(where, f"an offer for this item would exceed {MAX_MESSAGE_BYTES} bytes ({exc.detail}); "
                           "shorten its attributes or description") from exc
    if len(token) > MAX_MESSAGE_BYTES - 64:  # margin: price text and key lengths are estimates
        raise _fail(where, f"an offer for this item would be {len(token)} bytes, too close to the "
                           f"{MAX_MESSAGE_BYTES}-byte limit; shorten its attributes or description")


def _rule(data: Any, index: int, categories: set[str]) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(data, dict):
        raise _fail(where, "must be a mapping")
    _unknown_keys(data, _RULE_KEYS, where)
    when = data.get("when")
    if not isinstance(when, dict):
        raise _fail(where, "field 'when' is required: {attribute: NAME, <op>: VALUE}")
    attribute = when.get("attribute")
    if not isinstance(attribute, str) or not attribute:
        raise _fail(f"{where}.when", "field 'attribute' must be a non-empty string")
    ops = [k for k in when if k != "attribute"]
    if len(ops) != 1 or ops[0] not in OPS:
        raise _fail(f"{where}.when", f"needs exactly one operator of {', '.join(OPS)}, got {ops or 'none'}")
    op, value = ops[0], when[ops[0]]
    if op in ("lt", "lte", "gt", "gte") and not _is_number(value):
        raise _fail(f"{where}.when", f"operator '{op}' needs a number, got {value!r}")
    if op == "prefix" and (not isinstance(value, str) or not value):
        raise _fail(f"{where}.when", f"operator 'prefix' needs a non-empty string, got {value!r}")
    if op == "in" and not isinstance(value, list):
        raise _fail(f"{where}.when", f"operator 'in' needs a list, got {value!r}")
    if "discount_percent" not in data and "add" not in data:
        raise _fail(where, "needs 'discount_percent' and/or 'add'")
    discount = _number(data, "discount_percent", where, minimum=0, maximum=100, required=False)
    add = _number(data, "add", where, minimum=-MAX_AMOUNT, maximum=MAX_AMOUNT, required=False)
    category = data.get("category")
    if category is not None and not isinstance(category, str):
        raise _fail(where, "field 'category' must be a string")
    if category is not None and category not in categories:  # a typo would silently never apply
        raise _fail(where, f"field 'category' {category!r} is not the category of any item "
                           f"(items have: {', '.join(sorted(categories))})")
    return Rule(when=Condition(attribute, op, value), discount_percent=discount, add=add, category=category)


def parse_catalogue(data: Any) -> Catalogue:
    """Validate a decoded catalogue document; raise CatalogueError naming entry and field."""
    if not isinstance(data, dict):
        raise CatalogueError("catalogue: must be a mapping with 'currency' and 'items'")
    _unknown_keys(data, _TOP_KEYS, "catalogue")
    currency = data.get("currency")
    if not isinstance(currency, str):
        raise _fail("catalogue", "field 'currency' is required (ISO 4217, e.g. EUR)")
    try:
        check_currency(currency)
    except ProtocolError as exc:
        raise _fail("catalogue", f"field 'currency' {currency!r}: {exc.detail}") from exc
    region = data.get("region")
    if region is not None and not isinstance(region, str):
        raise _fail("catalogue", "field 'region' must be a string")
    if region is not None and len(region) > MAX_STR:
        raise _fail("catalogue", f"field 'region' is longer than {MAX_STR} characters")
    accept = data.get("accept_terms", "*")
    if accept != "*":
        if not isinstance(accept, list) or not all(isinstance(t, str) for t in accept):
            raise _fail("catalogue", "field 'accept_terms' must be \"*\" or a list of terms ids")
        accept = tuple(accept)
    validity = data.get("offer_validity_s", DEFAULT_OFFER_VALIDITY_S)
    if not isinstance(validity, int) or isinstance(validity, bool) or not 60 <= validity <= MAX_LIFETIME:
        raise _fail("catalogue", f"field 'offer_validity_s' must be an integer 60..{MAX_LIFETIME}, got {validity!r}")
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise _fail("catalogue", "field 'items' must be a non-empty list")
    skus: set[str] = set()
    parsed_items = tuple(_item(it, i, skus) for i, it in enumerate(items))
    for i, item in enumerate(parsed_items):
        _check_offer_size(item, currency, region, f"items[{i}] (sku {item.sku!r})")
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise _fail("catalogue", "field 'rules' must be a list")
    categories = {item.category for item in parsed_items}
    parsed_rules = tuple(_rule(r, i, categories) for i, r in enumerate(rules))
    return Catalogue(currency=currency, items=parsed_items, rules=parsed_rules, region=region,
                     accept_terms=accept, offer_validity_s=validity)
