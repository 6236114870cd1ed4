"""`vrmbox` subcommands for the market: run, intent, offers, offer, agreement(s), revoke, rules,
vendors, rejections, events, status.

Why thin: each command is one operation of the local interface (device/daemon/ops.py). With the
daemon running it goes over the control socket (so the daemon publishes at once); without it,
the same operation runs here on the store and its messages wait in the outbox for the daemon.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..client import MAX_REQUEST, ControlError, call, subscribe
from ..files import read_text_limited
from ..config import ConfigError
from ..market import MarketError
from ..textsafe import for_terminal as shown
from .common import EXIT_CONFIG, EXPECTED, common, config, fail, guarded, out, run_op

log = logging.getLogger(__name__)

def _attrs(pairs: list[str]) -> dict[str, Any]:
    """k=v pairs; v is parsed as JSON when it can be (numbers, booleans), else kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MarketError(f"attribute {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except (ValueError, RecursionError):
            out[k] = v
    return out


# ------------------------------------------------------------------ text renderers
# Vendor text (names, items, currencies, reasons) goes through device.textsafe.for_terminal:
# bidi and control characters shown as <U+202E> escapes, so a line reads in the order it was
# written (common.out's printable is the net under it, for everything else).
def _offers_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no offers"
    lines = []
    for i, r in enumerate(rows, 1):
        flag = "" if r["eligible"] else "  (filtered out)"
        lines.append(f"{i:>2}. {r['score']:6.3f}  {shown(r['vendor'])}: {shown(r['item'])} — "
                     f"{shown(r['price'])} {shown(r['currency'])}  [{shown(r['offer'])}]{flag}")
        ex = r["explanation"]
        for name, c in ex.get("contributions", {}).items():
            lines.append(f"      {shown(name):<16} {c:+.3f}")
        for why in ex.get("failed", []):
            lines.append(f"      failed: {shown(why)}")
    return "\n".join(lines)


def _pending_text(r: dict[str, Any]) -> str:
    lines = [f"agreement {a['agreement']}: send {', '.join(a['fields'])} to {shown(a['vendor'])} "
             f"({a['requested_by']})" for a in r["agreements"]]
    lines += [f"request {h['request']}: {shown(h['what'])} ({h['requested_by']})" for h in r["requests"]]
    return "\n".join(lines) or "nothing waits for a press on the box"


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "(none)"
    return "\n".join("  ".join(shown(r.get(c, "")) for c in cols) for r in rows)


# ------------------------------------------------------------------ commands
def cmd_run(args: argparse.Namespace) -> int:
    from ..config import DAEMON
    try:
        cfg = config(args, reader=DAEMON)
    except EXPECTED as exc:
        return fail(args, str(exc), EXIT_CONFIG)
    from ..daemon import AlreadyRunning, Daemon
    from ..daemon.access import AccessConfigError
    try:
        daemon = Daemon(cfg)
    except (AccessConfigError, ConfigError) as exc:
        return fail(args, f"cannot start: {exc}", EXIT_CONFIG)
    except (AlreadyRunning, *EXPECTED) as exc:
        return fail(args, f"cannot start: {exc}")
    return daemon.run()


def face_status(cfg: Any) -> str:
    """What the box's face runs on: its board, or why it is not started."""
    if cfg.ui.profile:
        return f"board {cfg.ui.profile}"
    if cfg.source is not None and cfg.control.button_users:
        return ("not started: no board chosen (the UI is installed; choose one with "
                "`sudo provisioning/install.sh --board PROFILE`, see `vrmbox hardware list`)")
    return "no board set (`vrmbox ui` uses the default profile or --display)"


def pairing_text(p: Any) -> str:
    """The pairing code's lockout in words: wrong codes so far, clients locked, spent."""
    if not isinstance(p, dict):
        return "unknown"
    code = p.get("code")
    if code in ("none", "expired"):
        return "no code active (`vrmbox pair` makes one)"
    wrong = f"{p.get('failures', 0)} of {p.get('max_failures', '?')} wrong codes"
    locked = int(p.get("clients_locked") or 0)
    if code == "spent":
        return f"code spent by {wrong}: make a fresh one (`vrmbox pair`, or the box's pair screen)"
    text = f"code active, {wrong}"
    if locked:
        text += f", {locked} device{'s' if locked != 1 else ''} locked out of it"
    return text + (" (a fresh code starts clean)" if p.get("failures") else "")


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    cfg = config(args)
    result = dict(call(cfg.control.socket, "status"))
    try:   # a daemon from before this operation existed still answers status
        result["pairing"] = call(cfg.control.socket, "pairing_status")
    except ControlError as exc:
        log.info("no pairing status: %s", exc)
    result["face"] = face_status(cfg)
    text = {**result, "pairing": pairing_text(result["pairing"])} if "pairing" in result else result
    out(args, result, "\n".join(f"{k}: {v}" for k, v in text.items()))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    try:
        for event in subscribe(config(args).control.socket):
            print(json.dumps(event, default=str), flush=True)
    except EXPECTED as exc:
        return fail(args, str(exc))
    except KeyboardInterrupt:
        pass
    return 0


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"key {k!r} appears twice")
        seen[k] = v
    return seen


def cmd_rules_set(args: argparse.Namespace) -> int:
    try:
        text = (sys.stdin.buffer.read(MAX_REQUEST + 1).decode("utf-8") if args.file == "-"
                else read_text_limited(args.file, MAX_REQUEST))
        if len(text) > MAX_REQUEST:
            raise ValueError(f"larger than {MAX_REQUEST} bytes")
        rules = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        return fail(args, f"cannot read rules from {args.file}: nested too deeply")
    except UnicodeDecodeError as exc:
        return fail(args, f"cannot read rules from {args.file}: not UTF-8 text (byte {exc.start})")
    except OSError as exc:
        return fail(args, f"cannot read rules from {args.file}: {exc.strerror or exc}")
    except ValueError as exc:
        return fail(args, f"cannot read rules from {args.file}: {exc}")
    return run_op(args, "rules_set", {"rules": rules})


def register(sub: Any) -> None:
    c = common()
    p = sub.add_parser("run", parents=[c], help="run the box daemon (speaks MQTT)")
    p.add_argument("--broker", help="broker URL, e.g. mqtt://127.0.0.1:1883 (overrides broker.url)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", parents=[c], help="is the daemon running and connected?")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("events", parents=[c], help="stream the daemon's events as JSON lines")
    p.set_defaults(func=cmd_events)

    intent = sub.add_parser("intent", help="what you are in the market for").add_subparsers(
        dest="intent_cmd", metavar="ACTION", required=True)
    p = intent.add_parser("add", parents=[c], help="cast an intent")
    p.add_argument("category")
    p.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                   help="a coarse attribute you choose to reveal (repeatable)")
    p.add_argument("--description")
    p.add_argument("--ttl", type=int, help="seconds until it expires")
    p.set_defaults(func=lambda a: _guard(a, lambda: run_op(a, "intent_add", {
        "category": a.category, "attributes": _attrs(a.attr), "description": a.description, "ttl": a.ttl},
        lambda r: f"intent {r['intent']} cast ({r['category']}), expires {r['expires_at']}")))
    p = intent.add_parser("preset", parents=[c], help="cast a saved preset")
    p.add_argument("name")
    p.set_defaults(func=lambda a: run_op(a, "intent_preset", {"name": a.name},
                                          lambda r: f"intent {r['intent']} cast ({r['category']})"))
    p = intent.add_parser("list", parents=[c], help="your intents and their offers")
    p.add_argument("--status", choices=["active", "withdrawn", "expired"])
    p.set_defaults(func=lambda a: run_op(a, "intents", {"status": a.status}, lambda r: _table(
        r, ["intent", "category", "status", "offers", "expires_at"])))
    p = intent.add_parser("withdraw", parents=[c], help="withdraw an intent (vendors are told)")
    p.add_argument("intent")
    p.set_defaults(func=lambda a: run_op(a, "intent_withdraw", {"intent": a.intent},
                                          lambda r: f"intent {r['intent']} withdrawn"))

    p = sub.add_parser("offers", parents=[c], help="offers ranked by your rules, with explanations")
    p.add_argument("--intent")
    p.add_argument("--all", action="store_true", help="include filtered-out and handled offers")
    p.set_defaults(func=lambda a: run_op(a, "offers", {"intent": a.intent, "all": a.all}, _offers_text))

    offer = sub.add_parser("offer", help="act on one offer").add_subparsers(
        dest="offer_cmd", metavar="ACTION", required=True)
    p = offer.add_parser("accept", parents=[c], help="make an agreement (sent after you confirm on the box)")
    p.add_argument("offer")
    p.add_argument("--fields", required=True, help="comma-separated profile fields to disclose")
    p.add_argument("--purpose")
    p.add_argument("--days", type=int, help="how long the vendor may keep them")
    p.set_defaults(func=lambda a: run_op(a, "offer_accept", {
        "offer": a.offer, "fields": [f for f in a.fields.split(",") if f], "purpose": a.purpose,
        "duration_days": a.days},
        lambda r: f"agreement {r['agreement']} waits for your confirmation on the box\n"
                  f"  discloses {', '.join(r['fields'])} to {r['vendor']} for '{r['purpose']}', "
                  f"{r['duration_days']} days"))
    p = offer.add_parser("decline", parents=[c], help="decline an offer")
    p.add_argument("offer")
    p.set_defaults(func=lambda a: run_op(a, "offer_decline", {"offer": a.offer},
                                          lambda r: f"offer {r['offer']} declined"))
    p = offer.add_parser("snooze", parents=[c], help="hide an offer for some hours")
    p.add_argument("offer")
    p.add_argument("--hours", type=float, default=24.0)
    p.set_defaults(func=lambda a: run_op(a, "offer_snooze", {"offer": a.offer,
                                                              "seconds": int(a.hours * 3600)},
                                          lambda r: f"offer {r['offer']} snoozed until {r['snooze_until']}"))

    agr = sub.add_parser("agreement", help="confirm or cancel a pending agreement").add_subparsers(
        dest="agreement_cmd", metavar="ACTION", required=True)
    p = agr.add_parser("confirm", parents=[c],
                       help="confirm on the box (the call the box's button makes)")
    p.add_argument("agreement")
    p.set_defaults(func=lambda a: run_op(a, "confirm", {"agreement": a.agreement},
                                          lambda r: f"agreement {r['agreement']} confirmed and sent",
                                          socket="button"))
    p = agr.add_parser("cancel", parents=[c], help="cancel an agreement not yet confirmed")
    p.add_argument("agreement")
    p.set_defaults(func=lambda a: run_op(a, "cancel", {"agreement": a.agreement},
                                          lambda r: f"agreement {r['agreement']} cancelled"))
    p = sub.add_parser("agreements", parents=[c], help="your agreements")
    p.set_defaults(func=lambda a: run_op(a, "agreements", {}, lambda r: _table(
        r, ["agreement", "vendor", "status", "fields", "revocation"])))
    p = sub.add_parser("revoke", parents=[c], help="end an agreement and ask the vendor to delete")
    p.add_argument("agreement")
    p.add_argument("--reason")
    p.set_defaults(func=lambda a: run_op(a, "revoke", {"agreement": a.agreement, "reason": a.reason},
                                          lambda r: f"agreement {r['agreement']} revoked; "
                                                    "waiting for the vendor's acknowledgement"))

    rules = sub.add_parser("rules", help="your filters and preferences").add_subparsers(
        dest="rules_cmd", metavar="ACTION", required=True)
    p = rules.add_parser("show", parents=[c], help="the rules in force")
    p.set_defaults(func=lambda a: run_op(a, "rules", {}))
    p = rules.add_parser("set", parents=[c], help="replace the rules with a JSON file ('-' for stdin)")
    p.add_argument("file")
    p.set_defaults(func=cmd_rules_set)

    p = sub.add_parser("vendors", parents=[c], help="vendors seen, their keys and rejections")
    p.set_defaults(func=lambda a: run_op(a, "vendors", {}, lambda r: _table(
        r, ["vendor", "status", "key_changed", "rejections"])))
    vendor = sub.add_parser("vendor", help="allow, block or trust a vendor").add_subparsers(
        dest="vendor_cmd", metavar="ACTION", required=True)
    p = vendor.add_parser("accept-key", parents=[c],
                          help="accept a vendor's changed key (give the did shown by `vrmbox vendors`)")
    p.add_argument("vendor")
    p.add_argument("did")
    p.set_defaults(func=lambda a: run_op(a, "vendor_accept_key", {"vendor": a.vendor, "did": a.did},
                                          lambda r: f"{r['vendor']}: now pinned to {r['did']}"))
    for status, verb in (("allowed", "allow"), ("blocked", "block"), ("trusted", "trust")):
        p = vendor.add_parser(verb, parents=[c], help=f"mark a vendor {status}")
        p.add_argument("vendor")
        p.set_defaults(func=lambda a, s=status: run_op(a, "vendor_status", {"vendor": a.vendor, "status": s},
                                                        lambda r: f"{r['vendor']}: {r['status']}"))
    p = sub.add_parser("pending", parents=[c], help="what waits for a press on the box")
    p.set_defaults(func=lambda a: run_op(a, "pending", {}, _pending_text))
    for name, verb in (("approve", "press and hold on the box: do what was asked"),
                       ("deny", "refuse a request waiting for a press")):
        p = sub.add_parser(name, parents=[c], help=f"{verb} (the box's button does this)")
        p.add_argument("request")
        p.set_defaults(func=lambda a, n=name: run_op(a, n, {"request": a.request},
                                                     lambda r: f"request {r['request']}: {r['status']}",
                                                     socket="button"))
    p = sub.add_parser("rejections", parents=[c], help="refused messages, by reason and vendor")
    p.set_defaults(func=lambda a: run_op(a, "rejections", {}, lambda r: _table(
        r, ["reason", "vendor", "count"])))


def _guard(args: argparse.Namespace, fn: Any) -> int:
    try:
        return fn()
    except EXPECTED as exc:
        return fail(args, str(exc))
