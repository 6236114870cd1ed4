"""Pairing phones with the box: one-time codes shown on the box, and the phones that used one.

Why here and not in the companion app: the app runs as a user that cannot read the store and
must never be able to mint its own codes; the daemon (the box's own user) owns both the code and
the list of phones, and the app asks it through control.sock for every request (docs/companion.md).

Everything lives in two sealed settings of the store (no schema change):
  companion.pairing    {"hash", "expires", "failures", "clients", "last_failure"}   the current code
  companion.phones     {phone_id: {"name", "created", "last_seen", "secret_hash"}}
A code is 10 random decimal digits (33 bits), single-use, valid for 5 minutes, stored only as a
SHA-256 hash and compared in constant time.

Wrong guesses are limited per code, never across codes, so that strangers cannot close pairing:
  * per client (the phone app passes the remote address): MAX_CLIENT_FAILURES = 5 wrong codes,
    then that client may not try this code again (the right code included);
  * in total: MAX_CODE_FAILURES = 300 wrong codes from anyone, then the code is spent and no
    guess is checked any more (the box's status screen and `vrmbox status` say so).
A code made on the box (its button, `vrmbox pair`) starts with no failures and no locked
client: whatever strangers did to the one before, the owner's fresh code works. A lockout
therefore lasts at most one code's five minutes, and nothing a stranger does persists.
Why these numbers: at most 300 guesses are ever checked against one code, so one code falls to
guessing with probability at most 300 / 10**10 = 3e-8 (a person pairs a few phones in the
box's life: a few in 10**8 over all). Codes exist only when the person asks for one, and a guess
when none is live (or after expiry) is answered without being checked. Spending a code takes 60
addresses (300 / 5) within its five minutes, each slowed by the app's own per-client back-off,
and costs the owner a press for a fresh one, shown on the box. The limit that remains: someone
on the LAN with many addresses (IPv6 gives them freely) can keep spending codes; raising the
total cap would trade that for a higher chance of guessing. A press on the box confirming the
new phone would close it; not built.
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
MAX_CLIENT_FAILURES = 5               # wrong codes one client may send against one code
MAX_CODE_FAILURES = 300               # wrong codes one code may take in total (see above)
MAX_CLIENT_ID = 100                   # a client is named by its address: short, printable
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

    reason: str                       # no_code | expired | wrong_code | locked | spent
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


def new_code(store: Store) -> dict[str, Any]:
    """Mint a fresh code (the previous one stops working). Only the box's face and its own
    user may call this. It starts with no failures and no locked client: a fresh code is the
    owner's way out of any lockout strangers caused (the bound per code is in the docstring)."""
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    now = store.now()
    old = _code_state(store)
    if old.get("failures"):
        log.info("a fresh pairing code ends the lockout of the last one (%d wrong codes)",
                 int(old["failures"]))
    store.set_setting(CODE_SETTING, {"hash": _hash(code), "expires": now + CODE_TTL_S,
                                     "failures": 0, "clients": {}, "last_failure": None})
    log.info("pairing code minted, valid for %d s", CODE_TTL_S)
    return {"code": code, "display": format_code(code), "expires_at": now + CODE_TTL_S}


def _code_state(store: Store) -> dict[str, Any]:
    value = store.get_setting(CODE_SETTING) or {}
    return value if isinstance(value, dict) else {}


def client_key(client: str | None) -> str:
    """The name a client's failures are counted under: its address as the app saw it, or
    "local" for the box's own user (no address). PairingError for anything else."""
    if client is None:
        return "local"
    if not isinstance(client, str) or not 0 < len(client.strip()) <= MAX_CLIENT_ID \
            or not client.isprintable():
        raise PairingError(f"a client is named by 1-{MAX_CLIENT_ID} printable characters "
                           f"(its address), not {str(client)[:40]!r}")
    return client.strip()


def check_code(store: Store, code: Any, client: str | None = None) -> Refusal | None:
    """None when `code` is the live code and this client may still try it; else why not.
    A wrong code is counted (per client and for the code) and audited, in one commit."""
    who = client_key(client)
    now = store.now()
    state = _code_state(store)
    stored = state.get("hash")
    if not isinstance(stored, str):
        return Refusal("no_code", 0, "no pairing code is active: make one on the box")
    expires = int(state.get("expires", 0))
    if expires <= now:      # nothing to guess any more: not checked, not counted
        return Refusal("expired", 0, "that code has expired: make a new one on the box")
    failures = int(state.get("failures", 0))
    clients = state.get("clients") if isinstance(state.get("clients"), dict) else {}
    if failures >= MAX_CODE_FAILURES:
        log.warning("pairing refused: the code is spent (client %s)", who)
        return Refusal("spent", 0, "too many wrong codes were tried against this code, so it no "
                                   "longer works: make a fresh one on the box")
    if int(clients.get(who, 0)) >= MAX_CLIENT_FAILURES:
        log.warning("pairing refused: client %s tried too many wrong codes", who)
        return Refusal("locked", expires - now, "too many wrong codes from this device: make a "
                                                "fresh code on the box, or wait for this one to end")
    digits = normalise_code(code) if isinstance(code, str) else None
    if digits is not None and hmac.compare_digest(_hash(digits), stored):
        return None
    failures += 1
    mine = int(clients.get(who, 0)) + 1
    clients = {**clients, who: mine}
    with store.transaction():
        store.set_setting(CODE_SETTING, {**state, "failures": failures, "clients": clients,
                                         "last_failure": now})
        store.record_event("pairing_failed", {"client": who, "failures": failures,
                                              "client_failures": mine})
    log.warning("wrong pairing code from client %s (%d from it, %d in all)", who, mine, failures)
    if failures >= MAX_CODE_FAILURES:
        return Refusal("wrong_code", 0, "that is not the code shown on the box, and this code "
                                        "now no longer works: make a fresh one on the box")
    if mine >= MAX_CLIENT_FAILURES:
        return Refusal("wrong_code", expires - now, "that is not the code shown on the box; this "
                                                    "device may not try this code again")
    return Refusal("wrong_code", 0, "that is not the code shown on the box")


def lockout(store: Store) -> dict[str, Any]:
    """What the box shows about the current code's wrong guesses (status screen, `vrmbox
    status`): state none | active | spent | expired, how many wrong, how many clients locked."""
    state = _code_state(store)
    now = store.now()
    clients = state.get("clients") if isinstance(state.get("clients"), dict) else {}
    failures = int(state.get("failures", 0)) if isinstance(state.get("hash"), str) else 0
    if not isinstance(state.get("hash"), str):
        code = "none"
    elif int(state.get("expires", 0)) <= now:
        code = "expired"
    else:
        code = "spent" if failures >= MAX_CODE_FAILURES else "active"
    live = code in ("active", "spent")
    return {"code": code, "expires_at": state.get("expires") if live else None,
            "failures": failures, "max_failures": MAX_CODE_FAILURES,
            "clients_locked": sum(1 for n in clients.values() if int(n) >= MAX_CLIENT_FAILURES),
            "client_max_failures": MAX_CLIENT_FAILURES, "last_failure_at": state.get("last_failure")}


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
    refusal = check_code(store, code, client)
    if refusal is not None:
        return refusal.to_dict()
    phones = _phones(store)
    if len(phones) >= MAX_PHONES:
        raise PairingError(f"at most {MAX_PHONES} phones can be paired; unpair one first")
    phone_id = "ph-" + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    phones[phone_id] = {"name": name, "created": now, "last_seen": now, "secret_hash": _hash(secret)}
    with store.transaction():   # the code is used up in the same commit that pairs the phone
        store.set_setting(CODE_SETTING, {})
        store.set_setting(PHONES_SETTING, phones)
        store.record_event("phone_paired", {"phone": phone_id, "name": name})
    log.info("phone %s (%s) paired", phone_id, name)
    return {"phone": phone_id, "name": name, "secret": secret}


# A phone's session lasts as long as the browser keeps its cookie (the app sets it for a year at
# pairing): enforced here too, so a copy of an old cookie stops working when the phone's own does.
SESSION_TTL_S = 365 * 86400


def session_expires(p: dict[str, Any]) -> int:
    return int(p.get("created") or 0) + SESSION_TTL_S


def session(store: Store, secret: str) -> dict[str, Any]:
    """The phone a session id belongs to (and mark it seen); PairingError if none or expired.
    The box keeps only a SHA-256 of the id (the app's cookie holds the id and nothing else)."""
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
    if now >= session_expires(phones[found]):
        raise PairingError("this phone's pairing has expired: pair it again with a code from the box")
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
