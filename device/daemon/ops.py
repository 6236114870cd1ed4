"""The one allow-list of the box's local interface: every operation, who may call it, and which
ones wait for a press on the box (docs/architecture.md prints this table).

Why one table: the sockets, the offline CLI and the docs all read it, so "the phone cannot press
the button" is a line here, not a convention spread over callers. Handlers are pure functions of
(market, args, role); operations the daemon answers itself (status, the event stream, held
requests, erase) have `run=None`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from .. import mydata, pairing
from ..market import COMPANION_ONLY_SETTING, Market, MarketError
from .access import BUTTON, COMPANION, OWNER

log = logging.getLogger(__name__)

ALL = frozenset({BUTTON, COMPANION, OWNER})
PHONE = frozenset({COMPANION, OWNER})           # control.sock: the phone app and the box's own user
BOX = frozenset({BUTTON})                       # button.sock: the box's own face


def _need(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in args:
        raise MarketError(f"missing argument {name!r}")
    value = args[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MarketError(f"argument {name!r} = {str(value)[:40]!r} has the wrong type")
    return value


def _opt(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return _need(args, name, kind) if args.get(name) is not None else None


def confirm_source(role: str) -> str:
    """A press on the box's own socket is the button; anything else counts as the phone."""
    return "button" if role == BUTTON else "companion"


Handler = Callable[[Market, dict[str, Any], str], Any]


@dataclass(frozen=True)
class Op:
    roles: frozenset[str]
    run: Handler | None = None                 # None: answered by the daemon itself
    writes: bool = True
    press: Callable[[dict[str, Any]], str | None] | None = None
    """For callers other than the button: a plain description if this call must wait for a
    press on the box (it is then held, see held.py), else None."""


def _read(fn: Callable[[Market, dict[str, Any]], Any], roles: frozenset[str] = ALL) -> Op:
    return Op(roles, lambda m, a, r: fn(m, a), writes=False)


def _write(fn: Callable[[Market, dict[str, Any]], Any], roles: frozenset[str] = PHONE,
           press: Callable[[dict[str, Any]], str | None] | None = None) -> Op:
    return Op(roles, lambda m, a, r: fn(m, a), press=press)


def _companion_only_press(a: dict[str, Any]) -> str | None:
    if a.get("key") == COMPANION_ONLY_SETTING and a.get("value") is True:
        return "let the phone confirm agreements without a press on the box"
    return None


OPS: dict[str, Op] = {
    # the daemon answers these itself
    "status": Op(ALL, writes=False),
    "subscribe": Op(ALL, writes=False),
    "pending": Op(ALL, writes=False),
    "request": Op(ALL, writes=False),
    "approve": Op(BOX),
    "deny": Op(BOX),
    "erase": Op(PHONE, press=lambda a: "erase all your data and keys, and ask vendors to delete theirs"),
    # market: what everyone can see
    "intents": _read(lambda m, a: m.list_intents(_opt(a, "status", str))),
    "offers": _read(lambda m, a: m.ranked_offers(_opt(a, "intent", str), bool(a.get("all")), bool(a.get("all")))),
    "agreements": _read(lambda m, a: m.list_agreements()),
    "vendors": _read(lambda m, a: m.list_vendors()),
    "rejections": _read(lambda m, a: m.rejections()),
    "rules": _read(lambda m, a: m.rules()),
    "presets": _read(lambda m, a: m.presets()),
    "settings": _read(lambda m, a: m.settings_view()),
    "rules_preview": _read(lambda m, a: m.preview_rules(_need(a, "rules", dict), _opt(a, "intent", str)), PHONE),
    "accept_preview": _read(lambda m, a: m.accept_preview(_need(a, "offer", str))),
    # market: what the box's face and the phone can both do
    "offer_accept": _write(lambda m, a: m.accept(_need(a, "offer", str), list(_need(a, "fields", list)),
                                                 _opt(a, "purpose", str), _opt(a, "duration_days", int)), ALL),
    "offer_decline": _write(lambda m, a: m.decline(_need(a, "offer", str)), ALL),
    "offer_snooze": _write(lambda m, a: m.snooze(_need(a, "offer", str),
                                                 86400 if a.get("seconds") is None else _need(a, "seconds", int)),
                           ALL),
    "intent_preset": _write(lambda m, a: m.add_intent_from_preset(_need(a, "name", str)), ALL),
    "intent_withdraw": _write(lambda m, a: m.withdraw_intent(_need(a, "intent", str)), ALL),
    "cancel": _write(lambda m, a: m.cancel(_need(a, "agreement", str)), ALL),
    "revoke": _write(lambda m, a: m.revoke(_need(a, "agreement", str), _opt(a, "reason", str)), ALL),
    # the consent: its source is the caller's role, never an argument
    "confirm": Op(ALL, lambda m, a, role: m.confirm(_need(a, "agreement", str), confirm_source(role))),
    # market: the phone and the box's own user
    "intent_add": _write(lambda m, a: m.add_intent(_need(a, "category", str), _opt(a, "attributes", dict),
                                                   _opt(a, "description", str), _opt(a, "ttl", int))),
    "rules_set": _write(lambda m, a: m.set_rules(_need(a, "rules", dict))),
    "vendor_status": _write(lambda m, a: m.set_vendor_status(_need(a, "vendor", str), _need(a, "status", str))),
    "vendor_accept_key": _write(lambda m, a: m.accept_vendor_key(_need(a, "vendor", str), _need(a, "did", str)),
                                press=lambda a: f"trust vendor {str(a.get('vendor'))[:64]}'s new key "
                                                f"{str(a.get('did'))[:24]}…"),
    "setting_set": _write(lambda m, a: m.set_setting(_need(a, "key", str), a.get("value")),
                          press=_companion_only_press),
    # the person's own data
    "profile": _read(lambda m, a: mydata.profile(m.store), PHONE),
    "profile_set": _write(lambda m, a: mydata.profile_set(m.store, _need(a, "name", str), a.get("value"),
                                                          _opt(a, "provenance", str) or "self",
                                                          _opt(a, "source", str))),
    "profile_annotate": _write(lambda m, a: mydata.profile_annotate(m.store, _need(a, "name", str),
                                                                    _opt(a, "annotation", str))),
    "profile_delete": _write(lambda m, a: mydata.profile_delete(m.store, _need(a, "name", str))),
    "stuff": _read(lambda m, a: mydata.stuff(m.store), PHONE),
    "stuff_add": _write(lambda m, a: mydata.stuff_add(
        m.store, _need(a, "name", str), _opt(a, "supplier", str), _opt(a, "purchase_date", str),
        _opt(a, "price", (int, float)), _opt(a, "currency", str), _opt(a, "warranty_end", str),
        _opt(a, "notes", str))),
    "suppliers": _read(lambda m, a: mydata.suppliers(m.store), PHONE),
    "supplier_add": _write(lambda m, a: mydata.supplier_add(m.store, _need(a, "vendor", str),
                                                            _need(a, "name", str), _opt(a, "notes", str))),
    "reviews": _read(lambda m, a: mydata.reviews(m.store), PHONE),
    "review_add": _write(lambda m, a: mydata.review_add(m.store, _need(a, "vendor", str), _need(a, "text", str),
                                                        _opt(a, "rating", int), _opt(a, "agreement", str))),
    "claims": _read(lambda m, a: mydata.claims(m.store), PHONE),
    "claims_import": _write(lambda m, a: mydata.claims_import(m.store, _need(a, "token", str))),
    "claims_trust": _write(lambda m, a: mydata.claims_trust(m.store, _need(a, "did", str))),
    "audit": _read(lambda m, a: mydata.audit(m.store, _opt(a, "offset", int) or 0,
                                             50 if a.get("limit") is None else _need(a, "limit", int),
                                             _opt(a, "type", str)), PHONE),
    "audit_verify": _read(lambda m, a: mydata.audit_verify(m.store), PHONE),
    "export": _write(lambda m, a: mydata.export(m.store)),   # audited: it writes an "export" entry
    # pairing phones (device/pairing.py): codes come only from the box's face or its own user,
    # never from the phone app, which could otherwise mint its own
    "pair_code": _write(lambda m, a: pairing.new_code(m.store), frozenset({BUTTON, OWNER})),
    "pair_complete": _write(lambda m, a: pairing.complete(m.store, _need(a, "code", str), _need(a, "name", str),
                                                          _opt(a, "client", str))),
    "phone_session": _read(lambda m, a: pairing.session(m.store, _need(a, "secret", str)), PHONE),
    "phones": _read(lambda m, a: pairing.list_phones(m.store)),
    # wrong pairing codes against the current one: the box's status screen and `vrmbox status`
    "pairing_status": _read(lambda m, a: pairing.lockout(m.store)),
    "phone_unpair": _write(lambda m, a: pairing.unpair(m.store, _need(a, "phone", str)), ALL),
}


class OpRefused(MarketError):
    """The operation exists but not for this caller, or not here."""


def lookup(op: str, role: str) -> Op:
    """The operation if this role may call it; OpRefused names what is wrong."""
    spec = OPS.get(op)
    if spec is None:
        raise OpRefused(f"unknown operation {op!r}")
    if role not in spec.roles:
        raise OpRefused(f"operation {op!r} is not available on this socket to this user")
    return spec


def held_description(spec: Op, args: dict[str, Any], role: str) -> str | None:
    """What to ask the person at the box, if this call must wait for their press."""
    if role == BUTTON or spec.press is None:
        return None
    return spec.press(args)


def run(market: Market, op: str, args: dict[str, Any], role: str) -> Any:
    """Run a market operation now (the caller already checked the role and any press)."""
    spec = lookup(op, role)
    if not isinstance(args, dict):
        raise MarketError("args must be an object")
    if spec.run is None:
        raise OpRefused(f"operation {op!r} needs the box daemon")
    try:
        return spec.run(market, args, role)
    except (mydata.MyDataError, pairing.PairingError) as exc:
        raise MarketError(str(exc)) from exc


def run_offline(market: Market, op: str, args: dict[str, Any]) -> Any:
    """The CLI's path when no daemon runs: the box's own user, but never a press."""
    spec = lookup(op, OWNER)
    if op == "confirm":
        raise OpRefused("confirming needs the box daemon running: the press on the box is the "
                        "consent, and nothing else may stand in for it. Start it (vrmbox run) and "
                        "confirm on the box")
    what = held_description(spec, args, OWNER)
    if what is not None:
        raise OpRefused(f"to {what} needs a press on the box: start the daemon (vrmbox run) and ask again")
    return run(market, op, args, OWNER)


def allow_list() -> list[tuple[str, list[str], bool, bool]]:
    """(op, roles, writes, may wait for a press) for every operation: docs and tests read this."""
    return [(name, sorted(spec.roles), spec.writes, spec.press is not None) for name, spec in sorted(OPS.items())]
