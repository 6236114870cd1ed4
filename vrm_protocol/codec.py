"""Sign and verify VRM messages: compact JWS (RFC 7515), EdDSA over Ed25519 (RFC 8037).

Pure: no clock, no network, no disk. The caller passes `now` and, for replay protection,
a ReplayGuard it keeps.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import heapq
import json
import re
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from cryptography.exceptions import InvalidSignature
from joserfc import jws
from joserfc.jwk import OKPKey

from .didkey import KEY_CACHE, Identity, did_from_kid, public_key_from_did
from .errors import ProtocolError
from .messages import BODY_TYPES, VERSION, Body, Offer, body_to_dict, built, check_id, parse_dataclass

MAX_MESSAGE_BYTES = 64 * 1024
CLOCK_SKEW = 120                      # seconds of tolerated clock difference
MAX_LIFETIME = 366 * 24 * 3600        # exp - iat may not exceed a year
ALG = "EdDSA"
ENVELOPE = ("v", "type", "id", "iss", "iat", "exp")
_ENVELOPE_KEYS = frozenset(ENVELOPE)
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*\Z")   # \Z: `$` would let a trailing newline through
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# a string (an unterminated one runs to the end: linear time whatever the input) or a bracket
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')
MAX_JSON_DEPTH = 32                   # nesting of objects/arrays in any JSON read from the network
HEADER_PARAMS = frozenset({"alg", "kid", "typ"})  # anything else is refused (bad_header)

T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    v: int
    type: str
    id: str
    iss: str
    iat: int
    exp: int


@dataclass(frozen=True)
class Message:
    """A verified message: who signed it (envelope.iss), what it says (body), the raw token."""

    envelope: Envelope
    body: Body
    token: str

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def hash(self) -> str:
        return token_hash(self.token)


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2): the one encoder for hashes, keys and signatures."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_b64url = b64url




def b64url_decode(segment: str) -> bytes:
    """Strict unpadded, canonical base64url (§2): the one decoder; ProtocolError('bad_encoding')."""
    if "=" in segment:
        raise ProtocolError("bad_encoding", "base64url segments carry no padding")
    if not _B64URL_RE.match(segment):  # Python's decoder would silently skip stray characters
        raise ProtocolError("bad_encoding", "segment is not base64url")
    return _decode_checked(segment)


_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
_DIGITS = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_UNUSED_BITS = (0, 0, 0x0F, 0x03)   # by length % 4: the low bits of the last digit that carry nothing


def _decode_checked(segment: str) -> bytes:
    """b64url_decode of a segment already matched against _B64URL_RE (no second scan): one
    C decode, and the canonical check on the last digit (its unused bits must be zero, so each
    byte string has one encoding)."""
    r = len(segment) % 4
    try:
        if r == 1:
            raise ValueError("a base64url segment cannot be 1 more than a multiple of 4 long")
        data = binascii.a2b_base64(segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[r])
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("bad_encoding", "segment is not base64url") from exc
    if r and _DIGITS.get(segment[-1], 0xFF) & _UNUSED_BITS[r]:
        raise ProtocolError("bad_encoding", "segment is not canonical base64url")
    return data


_b64url_decode = b64url_decode


def token_hash(token: str) -> str:
    """Unpadded base64url SHA-256 of a compact token: agreement ids, offer hashes."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


def new_id() -> str:
    """A fresh 128-bit random message id; never starts with '-' (so it reads as an argument)."""
    while True:
        candidate = secrets.token_urlsafe(16)
        if candidate[0] != "-":
            return candidate


def _okp_private(identity: Identity) -> OKPKey:
    return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": _b64url(identity.public_bytes),
                              "d": _b64url(identity.seed)})


def sign(identity: Identity, body: Body, *, now: float, ttl: int, msg_id: str | None = None) -> str:
    """Sign `body` as a compact JWS valid from `now` for `ttl` seconds."""
    iat = int(now)
    payload = {"v": VERSION, "type": body.TYPE, "id": msg_id or new_id(), "iss": identity.did,
               "iat": iat, "exp": iat + int(ttl), **body_to_dict(body)}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header = {"alg": ALG, "kid": identity.kid, "typ": "vrm+jws"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags RFC 8037 'EdDSA' as superseded by RFC 9864
        token = jws.serialize_compact(header, raw, _okp_private(identity), algorithms=[ALG])
    if len(token) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversize", f"signed message is {len(token)} bytes")
    return token


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # parsers disagree on which duplicate wins: refuse them all
        raise ValueError("duplicate member name")
    return obj


def _check_unicode(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate from a \uD8xx escape
            raise ValueError("string is not valid Unicode") from exc
    elif isinstance(value, list):
        for v in value:
            _check_unicode(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k)
            _check_unicode(v)


# One decoder for every strict parse (json.loads with hooks would build a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_object)
_SCAN = _DECODER.scan_once   # type: ignore[attr-defined]  # set by JSONDecoder.__init__, not in the stubs
_JSON_SPACE = " \t\n\r"


def check_json_depth(text: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """ValueError when objects/arrays nest deeper than `max_depth`: checked before parsing, so no
    parser recursion is ever at the mercy of the sender. (Strings are skipped; an unterminated
    one is left for the parser to refuse.)"""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth}")
        elif c == "]" or c == "}":
            depth -= 1


def parse_json_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 I-JSON (RFC 7493) object nested at most MAX_JSON_DEPTH deep, or ValueError.

    Stricter than json.loads: no duplicate member names, no NaN/Infinity, no lone surrogates
    (they cannot be stored or re-encoded as UTF-8, so they would crash whoever handles them next).
    """
    text = data.decode("utf-8")
    check_json_depth(text)
    if text[:1] in _JSON_SPACE:   # empty, or leading white space: the decoder's own path
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise ValueError("JSON text starts with a byte order mark")
        obj = _DECODER.decode(text)
    else:  # the scanner straight away (what decode does, less a regex on each end)
        try:
            obj, end = _SCAN(text, 0)
        except StopIteration as exc:   # the errors JSONDecoder.decode gives, word for word
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
        if end != len(text) and text[end:].strip(_JSON_SPACE):
            raise json.JSONDecodeError("Extra data", text, len(text) - len(text[end:].lstrip(_JSON_SPACE)))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # only a \uD800-\uDFFF escape can produce a surrogate
        _check_unicode(obj)
    return obj


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        return parse_json_object(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"{what} is not a JSON object: {exc}"[:200]) from exc


# Parsed headers kept (LRU): a vendor's header is the same on every message it sends. Only
# segments of a real header's size are kept, so a flood of odd headers costs no memory.
_HEADER_CACHE_MAX_LEN = 512


def compact_text(token: bytes | str, reason: str, kind: str) -> str:
    """A compact JOSE token as text: within the size limit and ASCII (`reason` otherwise).
    The first check of every JWS and JWE the box or a vendor receives."""
    if len(token) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversize", f"{len(token)} bytes > {MAX_MESSAGE_BYTES}")
    if isinstance(token, bytes):
        try:
            return token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError(reason, f"a compact {kind} is ASCII") from exc
    return token


def _split(token: bytes | str) -> tuple[str, list[str]]:
    """Size, ASCII, three unpadded base64url segments; ProtocolError otherwise."""
    token = compact_text(token, "bad_encoding", "JWS")
    parts = token.split(".")
    if len(parts) != 3:
        raise ProtocolError("bad_encoding", "a compact JWS has three segments")
    try:  # ASCII letters and digits once '-', '_' and the two dots are gone: one C pass each
        rest = token.encode("ascii").translate(None, b"-_.")
    except UnicodeEncodeError:
        rest = b"?"
    if rest and not rest.isalnum():
        raise ProtocolError("bad_encoding", "segments are unpadded base64url")
    return token, parts


def _parse_header(segment: str) -> dict[str, Any]:
    header = _json_object(_b64url_decode(segment), "header")
    if header.get("alg") != ALG:
        raise ProtocolError("bad_alg", f"alg must be {ALG}, got {str(header.get('alg'))[:20]!r}")
    if "crit" in header:
        raise ProtocolError("bad_header", "no critical header extensions are understood")
    for k in ("jwk", "jku", "x5u", "x5c"):  # the key comes from the did:key, never from the message
        if k in header:
            raise ProtocolError("bad_header", f"header parameter {k} is not allowed")
    if "kid" not in header:
        raise ProtocolError("bad_header", "kid is required")
    if "typ" in header and not isinstance(header["typ"], str):
        raise ProtocolError("bad_header", "typ must be a string")
    extra = set(header) - HEADER_PARAMS
    if extra:
        raise ProtocolError("bad_header", f"header parameter(s) {sorted(extra)[:3]} not allowed")
    return header


_parse_header_cached = functools.lru_cache(maxsize=KEY_CACHE)(_parse_header)


def _header(segment: str) -> dict[str, Any]:
    """The checked header (a fresh dict: callers may keep or change it); refusals not cached."""
    if len(segment) > _HEADER_CACHE_MAX_LEN:
        return _parse_header(segment)
    return dict(_parse_header_cached(segment))


def read_header(token: bytes | str) -> tuple[str, dict[str, Any]]:
    """Cheap first look: size, shape, header and signer did, without verifying anything."""
    token, parts = _split(token)
    return token, _header(parts[0])


def verify(token: bytes | str, *, now: float, replay: "ReplayGuard | None" = None,
           expect: type[T] | None = None) -> Message:
    """Verify and parse one message, or raise ProtocolError with a reason code.

    Checks, in order: size, encoding (canonical base64url), header (alg must be EdDSA; only
    alg/kid/typ), did:key, signature, payload I-JSON, version, type, envelope, kid/iss match,
    body fields, lifetime, freshness, replay. docs/protocol.md section 11 states the same list.

    The signature is checked as RFC 7515 §5.2 and RFC 8037 §3.1 define it, Ed25519 over the
    ASCII signing input, straight on the did:key's cached public key: each segment is decoded
    once and the payload parsed once (the header is checked above, as JOSE requires).
    """
    token, parts = _split(token)
    h = parts[0]   # the cached header itself: verify only reads it
    header = _parse_header_cached(h) if len(h) <= _HEADER_CACHE_MAX_LEN else _parse_header(h)
    payload_bytes = _decode_checked(parts[1])   # encoding errors are bad_encoding, before anything
    signature = _decode_checked(parts[2])
    did = did_from_kid(header["kid"])
    key = public_key_from_did(did)
    try:
        key.verify(signature, token[:len(parts[0]) + 1 + len(parts[1])].encode("ascii"))
    except InvalidSignature as exc:
        raise ProtocolError("bad_signature", "BadSignatureError") from exc
    payload = _json_object(payload_bytes, "payload")

    v, typ = payload.get("v"), payload.get("type")
    if type(v) is not int or v != VERSION:  # not 1.0, not true
        raise ProtocolError("unknown_version", f"v={str(v)[:20]}")
    cls = BODY_TYPES.get(typ) if isinstance(typ, str) else None
    if cls is None:
        raise ProtocolError("unknown_type", f"type={str(typ)[:40]}")
    if expect is not None and cls is not expect:
        raise ProtocolError("wrong_type", f"expected {expect.TYPE}, got {cls.TYPE}")  # type: ignore[attr-defined]
    if not _ENVELOPE_KEYS <= payload.keys():
        raise ProtocolError("bad_field", f"missing field {next(k for k in ENVELOPE if k not in payload)}")
    pop = payload.pop
    env = {k: pop(k) for k in ENVELOPE}
    iat, exp = env["iat"], env["exp"]
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise ProtocolError("bad_field", "iat must be an integer")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise ProtocolError("bad_field", "exp must be an integer")
    if not isinstance(env["id"], str) or not isinstance(env["iss"], str):
        raise ProtocolError("bad_field", "id and iss must be strings")
    check_id(env["id"], "id")
    if env["iss"] != did:
        raise ProtocolError("key_mismatch", "iss is not the did:key that signed")
    body = parse_dataclass(cls, payload)
    envelope = built(Envelope, env)
    if isinstance(body, Offer) and body.valid_until != envelope.exp:  # §8.4: one end of validity
        raise ProtocolError("bad_field", "offer valid_until must equal the JWS exp")

    if envelope.exp <= envelope.iat or envelope.exp - envelope.iat > MAX_LIFETIME:
        raise ProtocolError("bad_lifetime", "exp must be after iat and within a year of it")
    if envelope.iat > now + CLOCK_SKEW:
        raise ProtocolError("not_yet_valid", "iat is in the future")
    if envelope.exp < now - CLOCK_SKEW:
        raise ProtocolError("expired", "exp has passed")
    if replay is not None:
        replay.check_and_remember(replay_key(getattr(body, "intent", None), envelope.iss, envelope.id),
                                  envelope.exp, now)
    message: Message = built(Message, {"envelope": envelope, "body": body, "token": token})
    return message


def replay_key(intent: str | None, signer: str, msg_id: str) -> str:
    """What a receiver remembers against replays (docs/protocol.md section 11.3): a message id is
    unique only within its signer and the intent it answers (none for a vendor profile, an
    intent or its withdrawal). Scoped so that nobody can spend another signer's ids (squatting)
    and a copy of one intent's message on another intent's inbox matches nothing there."""
    return f"{intent or ''}/{signer}/{msg_id}"


class ReplayGuard:
    """Message ids seen, kept until they expire (an expired message is refused anyway).

    In-memory and bounded; a heap by expiry keeps pruning and eviction O(log n) per message,
    so a full guard under a flood costs no more than an empty one. The box also keeps stored
    message ids unique in its store.
    """

    def __init__(self, max_entries: int = 200_000,
                 kept_elsewhere: Callable[[str], bool] | None = None) -> None:
        """`kept_elsewhere`: where ids beyond memory are kept (the box: its store's indexed
        seen_messages), asked when memory does not know an id; memory then holds only the
        recent ones, however many are stored."""
        self._seen: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._max = max_entries
        self._elsewhere = kept_elsewhere

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._seen or (self._elsewhere is not None and self._elsewhere(msg_id))

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, msg_id: str, exp: int, now: float) -> None:
        """Refuse an id memory holds, else remember it. Memory only: an id kept elsewhere was
        stored by the caller, which checks `in` before storing (and may store just before)."""
        if msg_id in self._seen:
            raise ProtocolError("replay", f"message id {msg_id} seen before")
        if len(self._seen) >= self._max:
            self.prune(now)
            while len(self._seen) >= self._max:   # still full: forget the soonest-expiring
                self._pop()
        self.remember(msg_id, exp)

    def remember(self, msg_id: str, exp: int) -> None:
        """Also seeds the guard from the store after a restart."""
        self._seen[msg_id] = exp
        heapq.heappush(self._heap, (exp, msg_id))

    def prune(self, now: float) -> None:
        cutoff = now - CLOCK_SKEW
        while self._heap and self._heap[0][0] < cutoff:
            self._pop()

    def _pop(self) -> None:
        exp, msg_id = heapq.heappop(self._heap)
        if self._seen.get(msg_id) == exp:
            del self._seen[msg_id]



def unverified_payload(token: str) -> dict[str, Any]:
    """The payload of a token *we* signed and stored (e.g. to read its id). Never use it on input."""
    try:
        return _json_object(_b64url_decode(token.split(".")[1]), "payload")
    except (IndexError, ProtocolError):
        return {}
