"""Pairing phones with the box: one-time codes shown on the box, and the phones that used one.

Why here and not in the companion app: the app runs as a user that cannot read the store and
must never be able to mint its own codes; the daemon (the box's own user) owns both the code and
the list of phones, and the app asks it through control.sock for every request (docs/companion.md).

Everything lives in two sealed settings of the store (no schema change):
  companion.pairing    {"hash", "expires", "failures", "locked_until"}   the current code
  companion.phones     {phone_id: {"name", "created", "last_seen", "secret_hash"}}
A code is 10 random decimal digits (33 bits), single-use, valid for 5 minutes, stored only as a
SHA-256 hash and compared in constant time. Wrong codes are counted globally (whoever asks):
after MAX_FAILURES the box refuses every code for a back-off that doubles with each further
failure. The app adds its own per-client throttle on top.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from .store import Store

log = logging.getLogger(__name__)

CODE_DIGITS = 10                      # 10 ** 10 ~ 2 ** 33.2
CODE_TTL_S = 300
MAX_FAILURES = 5                      # wrong codes before the first lockout
LOCKOUT_BASE_S = 30                   # doubled for each wrong code after that
LOCKOUT_MAX_S = 3600
LAST_SEEN_RESOLUTION_S = 600          # last-seen is written at most this often (each write is audited)
MAX_PHONES = 20
MAX_NAME = 64
CODE_SETTING = "companion.pairing"
PHONES_SETTING = "companion.phones"
_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}\Z")
_SEPARATORS = re.compile(r"[\s\-.]")


class PairingError(ValueError):
    """A pairing request the box refuses; the message says why."""


@dataclass(frozen=True)
class Refusal:
    """Why a code was not accepted, and how long to wait before the next try (0: now)."""

    reason: str                       # no_code | expired | wrong_code | locked | bad_code
    retry_after: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"refused": self.reason, "retry_after": self.retry_after, "message": self.message}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_code(text: str) -> str | None:
    """Digits only, as typed ('12345 67890', '12345-67890'); None when it cannot be a code."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    code = _SEPARATORS.sub("", text)
    return code if len(code) == CODE_DIGITS and code.isascii() and code.isdigit() else None


def format_code(code: str) -> str:
    """How the box shows a code: two groups of five, easy to read off a small screen."""
    return f"{code[:5]} {code[5:]}"


def lockout_s(failures: int) -> int:
    """Seconds of lockout after `failures` wrong codes in a row (pure, for tests and docs)."""
    if failures < MAX_FAILURES:
        return 0
    return min(LOCKOUT_MAX_S, LOCKOUT_BASE_S * 2 ** (failures - MAX_FAILURES))


def new_code(store: Store) -> dict[str, Any]:
    """Mint a fresh code (the previous one stops working). Only the box's face and its own
    user may call this; the failure count carries over so a new code does not reset a lockout."""
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    now = store.now()
    old = store.get_setting(CODE_SETTING) or {}
    store.set_setting(CODE_SETTING, {"hash": _hash(code), "expires": now + CODE_TTL_S,
                                     "failures": int(old.get("failures", 0)),
                                     "locked_until": int(old.get("locked_until", 0))})
    log.info("pairing code minted, valid for %d s", CODE_TTL_S)
    return {"code": code, "display": format_code(code), "expires_at": now + CODE_TTL_S}


def _phones(store: Store) -> dict[str, dict[str, Any]]:
    value = store.get_setting(PHONES_SETTING) or {}
    return value if isinstance(value, dict) else {}


def complete(store: Store, code: str, name: str, client: str | None = None) -> dict[str, Any]:
    """Trade a code for a new phone and its session secret (returned once, stored as a hash).
    A refusal is an answer, not an error: {"refused", "retry_after", "message"}."""
    if not isinstance(name, str) or not _NAME_RE.match(name.strip() or "\x00"):
        raise PairingError(f"a phone name is 1-{MAX_NAME} printable characters")
    name = name.strip()
    now = store.now()
    state = store.get_setting(CODE_SETTING) or {}
    locked = int(state.get("locked_until", 0))
    if locked > now:
        refusal = Refusal("locked", locked - now, "too many wrong codes; wait before trying again")
        log.warning("pairing refused while locked out (client %s)", client or "?")
        return refusal.to_dict()
    digits = normalise_code(code) if isinstance(code, str) else None
    stored = state.get("hash")
    ok = (digits is not None and isinstance(stored, str)
          and hmac.compare_digest(_hash(digits), stored))
    if not ok:
        if stored is None:
            refusal = Refusal("no_code", 0, "no pairing code is active: make one on the box")
        else:
            failures = int(state.get("failures", 0)) + 1
            wait = lockout_s(failures)
            store.set_setting(CODE_SETTING, {**state, "failures": failures, "locked_until": now + wait})
            store.record_event("pairing_failed", {"failures": failures, "locked_s": wait})
            refusal = Refusal("wrong_code", wait, "that is not the code shown on the box")
        log.warning("wrong pairing code from client %s (%s)", client or "?", refusal.reason)
        return refusal.to_dict()
    if int(state.get("expires", 0)) <= now:
        with store.transaction():
            store.set_setting(CODE_SETTING, {"failures": 0, "locked_until": 0})
        return Refusal("expired", 0, "that code has expired: make a new one on the box").to_dict()
    phones = _phones(store)
    if len(phones) >= MAX_PHONES:
        raise PairingError(f"at most {MAX_PHONES} phones can be paired; unpair one first")
    phone_id = "ph-" + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    phones[phone_id] = {"name": name, "created": now, "last_seen": now, "secret_hash": _hash(secret)}
    with store.transaction():   # the code is used up in the same commit that pairs the phone
        store.set_setting(CODE_SETTING, {"failures": 0, "locked_until": 0})
        store.set_setting(PHONES_SETTING, phones)
        store.record_event("phone_paired", {"phone": phone_id, "name": name})
    log.info("phone %s (%s) paired", phone_id, name)
    return {"phone": phone_id, "name": name, "secret": secret}


def session(store: Store, secret: str) -> dict[str, Any]:
    """The phone a session secret belongs to (and mark it seen); PairingError if none."""
    if not isinstance(secret, str) or not 0 < len(secret) <= 256:
        raise PairingError("not a paired phone")
    wanted = _hash(secret)
    phones = _phones(store)
    found = None
    for phone_id, p in phones.items():   # every phone compared, in constant time each
        if hmac.compare_digest(str(p.get("secret_hash", "")), wanted):
            found = phone_id
    if found is None:
        raise PairingError("not a paired phone")
    now = store.now()
    if now - int(phones[found].get("last_seen", 0)) >= LAST_SEEN_RESOLUTION_S:
        phones[found] = {**phones[found], "last_seen": now}
        store.set_setting(PHONES_SETTING, phones)
    return _public(found, phones[found])


def _public(phone_id: str, p: dict[str, Any]) -> dict[str, Any]:
    return {"phone": phone_id, "name": p.get("name"), "created": p.get("created"),
            "last_seen": p.get("last_seen")}


def list_phones(store: Store) -> list[dict[str, Any]]:
    return sorted((_public(k, v) for k, v in _phones(store).items()), key=lambda p: p["created"] or 0)


def unpair(store: Store, phone_id: str) -> dict[str, Any]:
    """Forget a phone: its secret stops working on the next request it makes."""
    phones = _phones(store)
    if not isinstance(phone_id, str) or phone_id not in phones:
        raise PairingError(f"no paired phone {str(phone_id)[:40]!r}")
    gone = phones.pop(phone_id)
    with store.transaction():
        store.set_setting(PHONES_SETTING, phones)
        store.record_event("phone_unpaired", {"phone": phone_id, "name": gone.get("name")})
    log.info("phone %s unpaired", phone_id)
    return {"phone": phone_id, "unpaired": True}
