"""Message bodies of VRM protocol v2, as plain frozen data classes.

The annotations *are* the schema: `parse_body` checks a decoded JSON object against them
(no extra keys, no missing required keys, exact JSON types), so there is one place for
each message's fields. docs/protocol.md describes the same classes for other languages.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar, Literal, Union

from .didkey import public_bytes_from_did
from .errors import ProtocolError

VERSION = 2             # the one place for the protocol version (payload `v`, topic prefix)
MAX_STR = 2000          # longest free-text string field
MAX_JWE = 60 * 1024     # longest Disclosure.jwe (the whole message is at most 64 KiB)
MAX_LIST = 100          # longest list field
MAX_ATTRS = 50          # most keys in an attribute map
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}\Z")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")      # vendor and category slugs: the one pattern
SLUG_RULE = "must be a lower-case slug ([a-z0-9._-], at most 63)"   # what SLUG_RE means, for errors
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")                   # ISO 4217 codes
_HASH_RE = re.compile(r"^[A-Za-z0-9_-]{43}\Z")  # base64url, unpadded, of a SHA-256 digest

Scalar = Union[str, int, float, bool]
Attributes = dict[str, Any]  # str -> scalar or list of scalars (checked in _check_attributes)


def _bad(detail: str) -> ProtocolError:
    return ProtocolError("bad_field", detail)


def check_id(value: str, name: str) -> None:
    if not _ID_RE.match(value):
        raise _bad(f"{name} must be 8-64 characters of [A-Za-z0-9_-]")


def check_slug(value: str, name: str) -> None:
    if not SLUG_RE.match(value):
        raise _bad(f"{name} {SLUG_RULE}")


def check_hash(value: str, name: str) -> None:
    if not _HASH_RE.match(value):
        raise _bad(f"{name} must be an unpadded base64url SHA-256 digest")


def terms_digest(text: str) -> str:
    """sha256 (unpadded base64url) of a terms text's UTF-8 bytes."""
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode("utf-8")).digest()).rstrip(b"=").decode("ascii")


def check_currency(value: str, name: str = "currency") -> None:
    if not CURRENCY_RE.match(value):
        raise _bad(f"{name} must be an ISO 4217 code such as EUR")


# ---------------------------------------------------------------------------- shared parts
@dataclass(frozen=True)
class Terms:
    """Terms the person proffers (IEEE 7012 spirit): an id plus the SHA-256 of the terms text."""

    id: str
    sha256: str
    uri: str | None = None
    text: str | None = None   # the terms themselves, so a vendor can read what it accepts

    def check(self) -> None:
        check_slug(self.id, "terms.id")
        check_hash(self.sha256, "terms.sha256")
        if self.text is not None and terms_digest(self.text) != self.sha256:
            raise _bad("terms.sha256 is not the SHA-256 of terms.text")


@dataclass(frozen=True)
class TermsResponse:
    """A vendor's explicit answer to the proffered terms."""

    id: str
    sha256: str
    decision: Literal["accept", "reject"]

    def check(self) -> None:
        check_slug(self.id, "terms_response.id")
        check_hash(self.sha256, "terms_response.sha256")


@dataclass(frozen=True)
class Item:
    name: str
    sku: str | None = None
    brand: str | None = None
    description: str | None = None
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True)
class EncryptionKey:
    """An X25519 public key as an RFC 8037 JWK, for JWE ECDH-ES disclosures."""

    kty: Literal["OKP"]
    crv: Literal["X25519"]
    x: str

    def check(self) -> None:
        if not re.match(r"^[A-Za-z0-9_-]{43}$", self.x):
            raise _bad("enc_key.x must be 32 bytes, base64url")

    def as_jwk(self) -> dict[str, str]:
        return {"kty": self.kty, "crv": self.crv, "x": self.x}


# ---------------------------------------------------------------------------- bodies
@dataclass(frozen=True)
class VendorProfile:
    """A vendor's public profile, retained on its profile topic."""

    TYPE: ClassVar[str] = "vendor_profile"
    vendor: str
    name: str
    categories: list[str]
    enc_key: EncryptionKey
    url: str | None = None
    accreditations: list[str] = field(default_factory=list)

    def check(self) -> None:
        check_slug(self.vendor, "vendor")
        for c in self.categories:
            check_slug(c, "categories[]")


@dataclass(frozen=True)
class Intent:
    """What the person is in the market for, signed by a fresh key used for this intent only."""

    TYPE: ClassVar[str] = "intent"
    intent: str
    category: str
    terms: Terms
    description: str | None = None
    attributes: Attributes = field(default_factory=dict)

    def check(self) -> None:
        check_id(self.intent, "intent")
        check_slug(self.category, "category")


@dataclass(frozen=True)
class IntentWithdrawal:
    TYPE: ClassVar[str] = "intent_withdrawal"
    intent: str
    category: str

    def check(self) -> None:
        check_id(self.intent, "intent")
        check_slug(self.category, "category")


@dataclass(frozen=True)
class Offer:
    """A vendor's answer to an intent, signed by the key in the vendor's profile."""

    TYPE: ClassVar[str] = "offer"
    intent: str
    vendor: str
    item: Item
    price: float
    currency: str
    valid_until: int
    terms_response: TermsResponse
    delivery_days: int | None = None
    region: str | None = None

    def check(self) -> None:
        check_id(self.intent, "intent")
        check_slug(self.vendor, "vendor")
        check_currency(self.currency)
        if self.price < 0:
            raise _bad("price must not be negative")
        if self.delivery_days is not None and self.delivery_days < 0:
            raise _bad("delivery_days must not be negative")


@dataclass(frozen=True)
class Agreement:
    """The person's terms + the offer + exactly what is disclosed, why and for how long.

    Signed by the intent key when the person confirms; its id is the message `id`, chosen when
    the person accepts (so it names the agreement before it is signed). Sent sealed (JWE).
    """

    TYPE: ClassVar[str] = "agreement"
    intent: str
    offer: str            # the offer message id
    offer_hash: str       # token_hash of the offer token
    vendor: str
    vendor_did: str
    terms: Terms
    fields: list[str]
    purpose: str
    duration_days: int

    def check(self) -> None:
        check_id(self.intent, "intent")
        check_id(self.offer, "offer")
        check_hash(self.offer_hash, "offer_hash")
        check_slug(self.vendor, "vendor")
        try:
            public_bytes_from_did(self.vendor_did)
        except ProtocolError as exc:
            raise _bad("vendor_did must be an Ed25519 did:key") from exc
        for f in self.fields:
            check_slug(f, "fields[]")
        if not 0 < self.duration_days <= 3650:
            raise _bad("duration_days must be 1..3650")


@dataclass(frozen=True)
class Countersignature:
    """The vendor's signature over an agreement id: both sides now hold the same record."""

    TYPE: ClassVar[str] = "countersignature"
    agreement: str
    agreement_hash: str   # token_hash of the agreement token: what exactly was countersigned
    intent: str

    def check(self) -> None:
        check_id(self.agreement, "agreement")
        check_hash(self.agreement_hash, "agreement_hash")
        check_id(self.intent, "intent")


@dataclass(frozen=True)
class Disclosure:
    """The agreed fields, as a compact JWE (ECDH-ES, A256GCM) to the vendor's enc_key."""

    TYPE: ClassVar[str] = "disclosure"
    agreement: str
    intent: str
    jwe: str = field(metadata={"max_len": MAX_JWE})  # bounded by the message size, not MAX_STR

    def check(self) -> None:
        check_id(self.agreement, "agreement")
        check_id(self.intent, "intent")
        if self.jwe.count(".") != 4:
            raise _bad("jwe must be a compact JWE")


@dataclass(frozen=True)
class Revocation:
    """The person ends an agreement; with delete=true the vendor must delete the disclosed data."""

    TYPE: ClassVar[str] = "revocation"
    agreement: str
    intent: str
    delete: bool
    reason: str | None = None

    def check(self) -> None:
        check_id(self.agreement, "agreement")
        check_id(self.intent, "intent")


@dataclass(frozen=True)
class RevocationAck:
    """The vendor's signed acknowledgement of a revocation (and of deletion)."""

    TYPE: ClassVar[str] = "revocation_ack"
    agreement: str
    intent: str
    revocation: str       # id of the revocation message acknowledged
    deleted: bool

    def check(self) -> None:
        check_id(self.agreement, "agreement")
        check_id(self.intent, "intent")
        check_id(self.revocation, "revocation")


@dataclass(frozen=True)
class Receipt:
    """The box stored these offers (or already had them): the sha256 (token_hash) of each offer
    token, signed by the intent key. Only a holder of an offer token can match its hash; the list
    is padded with random hashes to a bucket (RECEIPT_BUCKETS) so its length tells little."""

    TYPE: ClassVar[str] = "receipt"
    intent: str
    category: str
    offers: list[str]

    def check(self) -> None:
        check_id(self.intent, "intent")
        check_slug(self.category, "category")
        if not self.offers:
            raise _bad("offers must not be empty")
        if len(self.offers) > MAX_RECEIPT_OFFERS:
            raise _bad(f"offers has more than {MAX_RECEIPT_OFFERS} hashes")
        for h in self.offers:
            check_hash(h, "offers[]")


MAX_RECEIPT_OFFERS = 32          # hashes in one receipt (a commit with more sends several)
RECEIPT_BUCKETS = (8, MAX_RECEIPT_OFFERS)   # a receipt's list is padded to one of these lengths


BODY_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (VendorProfile, Intent, IntentWithdrawal, Offer, Agreement, Countersignature,
                Disclosure, Revocation, RevocationAck, Receipt)
}
Body = Union[VendorProfile, Intent, IntentWithdrawal, Offer, Agreement, Countersignature,
             Disclosure, Revocation, RevocationAck, Receipt]


# ---------------------------------------------------------------------------- validation
def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise _bad(f"{where} is longer than {MAX_STR}")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise _bad(f"{where} must be finite and at most 1e15")
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**53:  # beyond this JSON numbers stop being exact in other languages
            raise _bad(f"{where} is out of range")
    elif not isinstance(value, bool):
        raise _bad(f"{where} must be a string, number or boolean")


def _check_attributes(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object")
    if len(value) > MAX_ATTRS:
        raise _bad(f"{where} has more than {MAX_ATTRS} keys")
    for k, v in value.items():
        if len(k) > 64:
            raise _bad(f"{where} key is longer than 64")
        if isinstance(v, list):
            if len(v) > MAX_LIST:
                raise _bad(f"{where}.{k} has more than {MAX_LIST} items")
            for item in v:
                if not _plain_scalar(item):   # the path is spelt out only for an error
                    _check_scalar(item, f"{where}.{k}[]")
        elif not _plain_scalar(v):
            _check_scalar(v, f"{where}.{k}")
    return dict(value)


def _plain_scalar(v: Any) -> bool:
    """A value _check_scalar accepts, by the quick exact-type tests (False: let it decide)."""
    c = v.__class__
    if c is str:
        return len(v) <= MAX_STR
    if c is int:
        return bool(-9007199254740992 <= v <= 9007199254740992)
    if c is float:
        return bool(-1e15 <= v <= 1e15)
    return c is bool


_SHAPES: dict[Any, tuple[Any, tuple[Any, ...]]] = {}


def _shape(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """(origin, args) of a type hint, worked out once per hint."""
    shape = _SHAPES.get(tp)
    if shape is None:
        shape = _SHAPES[tp] = (typing.get_origin(tp), typing.get_args(tp))
    return shape


_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, tuple[tuple[str, Any, int, bool], ...]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items()
                       if typing.get_origin(v) is not ClassVar}
    return _HINTS[cls]


def _plan(cls: type) -> tuple[tuple[str, Any, int, bool], ...]:
    """(name, hint, max_len, required) per field of a message class, reflected on once."""
    plan = _FIELDS.get(cls)
    if plan is None:
        hints = _hints(cls)
        plan = _FIELDS[cls] = tuple(
            (f.name, hints[f.name], f.metadata.get("max_len", MAX_STR),
             f.default is MISSING and f.default_factory is MISSING) for f in fields(cls))
    return plan


# ---------------------------------------------------------------------------- compiled parsers
# verify is on the hot path: each (type hint, place in the message) gets a converter built once
# from the cached plan, a closure with its checks and error texts fixed, so parsing a message
# walks no type hints and formats no strings. The set of keys is bounded by the classes'
# static structure (and the few `where` prefixes callers pass).
Converter = Callable[[Any], Any]
_CONVERTERS: dict[tuple[Any, str, int], Converter] = {}


def _converter(tp: Any, where: str, max_len: int = MAX_STR) -> Converter:
    """The converter of JSON values for hint `tp` at path `where` (built once per key)."""
    key = (tp, where, max_len)
    conv = _CONVERTERS.get(key)
    if conv is None:
        conv = _CONVERTERS[key] = _build_converter(tp, where, max_len)
    return conv


def _build_converter(tp: Any, where: str, max_len: int) -> Converter:  # noqa: C901 (one case per kind)
    origin, args = _shape(tp)
    if origin in (Union, types.UnionType):
        inner_types = [a for a in args if a is not type(None)]
        if len(inner_types) != 1:
            raise TypeError(f"unsupported annotation {tp!r}")  # programming error
        inner = _converter(inner_types[0], where, max_len)
        if type(None) not in args:
            return inner

        def optional(value: Any) -> Any:
            return None if value is None else inner(value)
        return optional
    if origin is Literal:
        allowed, msg = args, f"{where} must be one of {list(args)}"

        def literal(value: Any) -> Any:
            if not isinstance(value, str) or value not in allowed:
                raise _bad(msg)
            return value
        return literal
    if origin is list:
        (item_type,) = args
        item, not_list, too_long = (_converter(item_type, f"{where}[]"), f"{where} must be a list",
                                    f"{where} has more than {MAX_LIST} items")

        def listed(value: Any) -> Any:
            if not isinstance(value, list):
                raise _bad(not_list)
            if len(value) > MAX_LIST:
                raise _bad(too_long)
            return [item(v) for v in value]
        return listed
    if origin is dict:
        return lambda value: _check_attributes(value, where)
    if tp is str:
        not_str, too_long = f"{where} must be a string", f"{where} is longer than {max_len}"

        def string(value: Any) -> Any:
            if not isinstance(value, str):
                raise _bad(not_str)
            if len(value) > max_len:
                raise _bad(too_long)
            return value
        return string
    if tp is bool:
        not_bool = f"{where} must be a boolean"

        def boolean(value: Any) -> Any:
            if not isinstance(value, bool):
                raise _bad(not_bool)
            return value
        return boolean
    if tp is int:
        not_int, out_of_range = f"{where} must be an integer", f"{where} is out of range"

        def integer(value: Any) -> Any:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _bad(not_int)
            if abs(value) > 2**53:
                raise _bad(out_of_range)
            return value
        return integer
    if tp is float:
        not_number, out_of_range = f"{where} must be a number", f"{where} is out of range"

        def number(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(not_number)
            if not math.isfinite(value) or abs(value) > 1e15:
                raise _bad(out_of_range)
            return float(value)
        return number
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build_dataclass_parser(tp, where)
    raise TypeError(f"unsupported annotation {tp!r}")  # programming error


def built(cls: type, values: dict[str, Any]) -> Any:
    """`cls(**values)` for a plain frozen data class whose `values` name every field: the
    instance's attributes set at once (a frozen __init__ sets them one by one through
    object.__setattr__, most of the cost of building a small message on the hot path)."""
    obj: Any = _new(cls)
    obj.__dict__.update(values)
    return obj


_new = object.__new__


def _plain(cls: type) -> bool:
    """Whether `built` may stand in for cls(**values): no __post_init__, no slots, no init=False."""
    return (not hasattr(cls, "__post_init__") and hasattr(cls, "__dict__")
            and "__slots__" not in vars(cls) and all(f.init for f in fields(cls)))


# Inline fast paths per field kind: a value of exactly this JSON type and in range is taken as it
# is; anything else goes to the field's converter, which refuses it with the precise error (or
# converts it). `{x}` is the value, `{c}` its converter.
_FAST_PATHS = {
    str: "if {x}.__class__ is not str or len({x}) > {max_len}: {x} = {c}({x})",
    int: "if {x}.__class__ is not int or not -9007199254740992 <= {x} <= 9007199254740992: {x} = {c}({x})",
    float: "if {x}.__class__ is not float or not -1e15 <= {x} <= 1e15: {x} = {c}({x})",
    bool: "if {x}.__class__ is not bool: {x} = {c}({x})",
}


def _build_dataclass_parser(cls: type, where: str) -> Converter:
    """One message class at one path, as one generated function over the cached plan: unknown
    keys, then each field in order (missing, converted, or its default), then `check` (nested
    objects checked themselves when they were built). Same checks and errors, in the same order,
    as walking the plan; no loop, no per-field call for plain scalars."""
    label = where or cls.__name__
    names = frozenset(_hints(cls))
    by_name = {f.name: f for f in fields(cls)}
    env: dict[str, Any] = {"_bad": _bad, "NAMES": names, "CLS": cls, "MISSING": MISSING,
                           "NOT_OBJECT": f"{label} must be an object", "LABEL": label,
                           "CHECK": getattr(cls, "check", None), "_built": built}
    lines = ["def parse(data):",
             "    if not isinstance(data, dict):",
             "        raise _bad(NOT_OBJECT)",
             "    if not NAMES.issuperset(data):",
             "        raise _bad(f'unknown field(s) {sorted(set(data) - NAMES)[:5]} in {LABEL}')",
             "    values = {}"]
    for i, (fname, hint, max_len, required) in enumerate(_plan(cls)):
        path = f"{where}.{fname}" if where else fname
        env[f"C{i}"] = _converter(hint, path, max_len)
        fast = _FAST_PATHS.get(hint)
        lines += [f"    if {fname!r} in data:",
                  f"        x = data[{fname!r}]",
                  "        " + (fast.format(x="x", c=f"C{i}", max_len=max_len) if fast else f"x = C{i}(x)"),
                  f"        values[{fname!r}] = x",
                  "    else:"]
        f = by_name[fname]
        if required:
            env[f"M{i}"] = f"missing field {path}"
            lines.append(f"        raise _bad(M{i})")
        elif f.default_factory is not MISSING:
            env[f"F{i}"] = f.default_factory
            lines.append(f"        values[{fname!r}] = F{i}()")
        else:
            env[f"D{i}"] = f.default
            lines.append(f"        values[{fname!r}] = D{i}")
    lines.append("    obj = _built(CLS, values)" if _plain(cls) else "    obj = CLS(**values)")
    if env["CHECK"] is not None:
        lines.append("    CHECK(obj)")
    lines.append("    return obj")
    exec(compile("\n".join(lines), f"<parser of {cls.__name__} at {label}>", "exec"), env)  # noqa: S102
    parse: Callable[[Any], Any] = env["parse"]
    return parse


def parse_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Build `cls` from a decoded JSON object, or raise ProtocolError('bad_field')."""
    return _converter(cls, where)(data)


def body_to_dict(body: Any) -> dict[str, Any]:
    """JSON-ready dict of a body (or nested part), omitting None-valued optional fields."""
    out: dict[str, Any] = {}
    for f in fields(body):
        v = getattr(body, f.name)
        if v is None:
            continue
        if hasattr(v, "__dataclass_fields__"):
            v = body_to_dict(v)
        elif isinstance(v, list):
            v = [body_to_dict(x) if hasattr(x, "__dataclass_fields__") else x for x in v]
        out[f.name] = v
    return out
