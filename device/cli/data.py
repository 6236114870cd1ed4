"""`vrmbox` subcommands for the person's data: export/import, backup/restore, erase, audit,
profile, stuff, suppliers, claims.

Why thin: each handler opens the store, calls one function of store/portability/claims/erase
and prints the result (text, or JSON with --json). Errors print a clear message and exit 1;
nothing here decides policy.
"""
from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .. import erase as erase_mod
from .. import portability
from ..client import MAX_REQUEST, ControlError, call
from ..files import KIB, read_text_limited
from ..store import Store
from ..textsafe import for_terminal as shown
from .common import common, config, fail, guarded, open_store, out, run_op, running_daemon

log = logging.getLogger(__name__)

ERASE_CONFIRMATION = "erase everything"
ERASE_WAIT_S = 300


def _store_command(create: bool = False) -> Callable[[Callable[[argparse.Namespace, Store], int]],
                                                     Callable[[argparse.Namespace], int]]:
    """Open the store (an existing one unless `create`), run the handler; expected errors
    become a message and exit 1."""
    def wrap(fn: Callable[[argparse.Namespace, Store], int]) -> Callable[[argparse.Namespace], int]:
        @guarded
        def handler(args: argparse.Namespace) -> int:
            with open_store(config(args), create=create) as store:
                return fn(args, store)
        return handler
    return wrap


_with_store = _store_command()


def _no_daemon(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Replacing the keys under a running daemon would leave it sealing rows with the old ones."""
    @guarded
    def handler(args: argparse.Namespace) -> int:
        if running_daemon(config(args)):
            return fail(args, "the box daemon is running; stop it first (systemctl stop vrmbox)")
        return fn(args)
    return handler


def _passphrase(args: argparse.Namespace, confirm: bool) -> str:
    """--passphrase-file, else $VRMBOX_PASSPHRASE, else a prompt (only on a terminal)."""
    if args.passphrase_file:
        try:
            return read_text_limited(args.passphrase_file, 64 * KIB).rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise portability.PortabilityError(f"cannot read passphrase file: {exc.strerror}") from exc
    env = os.environ.get("VRMBOX_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        raise portability.PortabilityError("no passphrase: use --passphrase-file or VRMBOX_PASSPHRASE")
    first = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise portability.PortabilityError("the passphrases differ")
    return first


# ------------------------------------------------------------------ handlers
@_with_store
def cmd_export(args: argparse.Namespace, store: Store) -> int:
    doc = portability.export_to_file(store, Path(args.file))
    n = len(doc["audit"]["entries"])
    out(args, {"ok": True, "file": str(args.file), "audit_entries": n},
         f"exported everything to {args.file} ({n} audit entries). It holds your data in the clear.")
    return 0


@_no_daemon
@_store_command(create=True)
def cmd_import(args: argparse.Namespace, store: Store) -> int:
    doc = portability.import_from_file(store, Path(args.file), force=args.force)
    out(args, {"ok": True, "audit_entries": len(doc.entries), "from_device": doc.device_did},
         f"imported {args.file} ({len(doc.entries)} audit entries)")
    return 0


@_with_store
def cmd_backup(args: argparse.Namespace, store: Store) -> int:
    portability.backup_to_file(store, Path(args.file), _passphrase(args, confirm=True))
    out(args, {"ok": True, "file": str(args.file)}, f"encrypted backup written to {args.file}")
    return 0


@_no_daemon
@_store_command(create=True)
def cmd_restore(args: argparse.Namespace, store: Store) -> int:
    doc = portability.restore_from_file(store, Path(args.file), _passphrase(args, confirm=False),
                                        force=args.force)
    out(args, {"ok": True, "audit_entries": len(doc.entries), "device_did": doc.device_did},
         f"restored {args.file} ({len(doc.entries)} audit entries)")
    return 0


@guarded
def cmd_erase(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            return fail(args, "erase needs --yes or a typed confirmation on a terminal", 2)
        print("This deletes ALL your data and keys. Vendors with active agreements are asked to "
              "delete what you shared.")
        if input(f'Type "{ERASE_CONFIRMATION}" to continue: ').strip() != ERASE_CONFIRMATION:
            return fail(args, "not confirmed; nothing was erased", 2)
    cfg = config(args)
    sock = running_daemon(cfg)
    if sock is not None:  # the daemon holds the keys: it erases, after a press on the box
        held = call(sock, "erase", {"requested_by": "vrmbox erase"})
        print(f"waiting for a press on the box: hold SELECT to erase (request {held['request']}; "
              f"in the single-user development setup `vrmbox approve {held['request']}` is the press)",
              file=sys.stderr, flush=True)
        result = _wait_for_request(sock, held["request"], args.wait)
        if result["status"] != "done":
            return fail(args, f"nothing was erased: the request is {result['status']}"
                        + (f" ({result['error']})" if result.get("error") else ""), 2)
        done = result["result"]
        out(args, done, f"erased. {done['deletion_requests']} deletion request(s) sent to vendors.")
        return 0
    result = erase_mod.erase(cfg.data_dir)
    out(args, {"ok": True, **dataclasses.asdict(result)},
        f"erased. {result.deletion_requests} deletion request(s) queued for vendors.")
    return 0


def _wait_for_request(sock: Path, request: str, wait_s: float) -> dict[str, Any]:
    """Poll a held request until the person answered on the box, or it expired."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = call(sock, "request", {"request": request})
        except ControlError as exc:        # the daemon restarted: held requests are gone
            return {"status": "lost", "error": str(exc)}
        if state["status"] not in ("waiting", "running") or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


@_with_store
def cmd_audit_verify(args: argparse.Namespace, store: Store) -> int:
    r = store.audit.verify()
    text = (f"audit log OK ({r.count} entries)" if r.ok else
            f"audit log BROKEN: first bad entry {r.first_bad}: {r.reason}" if r.first_bad is not None
            else f"audit log BROKEN: {r.reason}")
    if args.json:
        out(args, r.to_dict(), text)
    elif r.ok:
        print(text)
    else:
        print(text, file=sys.stderr)
    return 0 if r.ok else 1


MAX_AUDIT_COUNT = 10**9   # far above any log; SQLite's LIMIT/OFFSET take 64-bit integers only


def _audit_count(text: str) -> int:
    """--offset/--limit: a whole number in range, or argparse's clear error (never an
    OverflowError from SQLite for 10**30)."""
    try:
        n = int(text.strip()) if len(text) <= 20 else None
    except ValueError:
        n = None
    if n is None or not 0 <= n <= MAX_AUDIT_COUNT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_AUDIT_COUNT}")
    return n


@_with_store
def cmd_audit_show(args: argparse.Namespace, store: Store) -> int:
    entries = store.audit.entries(args.offset, args.limit)
    lines = [f"{e.seq:6d}  {e.created_at}  {e.event_type:24s} {json.dumps(e.data, sort_keys=True)}"
             for e in entries]
    out(args, {"total": store.audit.count(), "offset": args.offset, "entries": entries},
         "\n".join(lines) or "(no entries)")
    return 0


def _profile_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for f in rows:
        src = f" ({f['provenance']}{': ' + f['source'] if f.get('source') else ''})"
        lines.append(f"{f['name']} = {json.dumps(f['value'], ensure_ascii=False)}{src}"
                     + (f"  # {f['annotation']}" if f.get("annotation") else ""))
    return "\n".join(lines) or "(empty profile)"


def cmd_profile_set(args: argparse.Namespace) -> int:
    value: Any = args.value
    if args.json_value:
        try:
            value = json.loads(args.value)
        except (ValueError, RecursionError):
            return fail(args, "VALUE is not JSON (drop --json-value for plain text)")
    provenance, source = ("co-managed", args.co_managed) if args.co_managed else ("self", None)
    return run_op(args, "profile_set", {"name": args.name, "value": value, "provenance": provenance,
                                        "source": source}, f"set {args.name}")


def cmd_claims_import(args: argparse.Namespace) -> int:
    try:
        token = read_text_limited(args.file, MAX_REQUEST).strip()
    except (OSError, UnicodeDecodeError) as exc:
        return fail(args, f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}")
    return run_op(args, "claims_import", {"token": token},
                  lambda r: f"imported claim {r['id']} from {shown(r['issuer'])}: "
                            f"{', '.join(shown(t) for t in r['types'])}")


# ------------------------------------------------------------------ registration
def register(subparsers: Any) -> None:
    """Add this area's subcommands to the `vrmbox` parser (see vrmbox/cli.py)."""
    c = common()

    p = subparsers.add_parser("export", parents=[c], help="write everything as signed JSON")
    p.add_argument("file")
    p.set_defaults(func=cmd_export)
    p = subparsers.add_parser("import", parents=[c], help="load an export onto a fresh box")
    p.add_argument("file")
    p.add_argument("--force", action="store_true", help="replace a box that already holds data")
    p.set_defaults(func=cmd_import)
    for name, fn, helptext in (("backup", cmd_backup, "encrypted backup including keys"),
                               ("restore", cmd_restore, "restore an encrypted backup")):
        p = subparsers.add_parser(name, parents=[c], help=helptext)
        p.add_argument("file")
        p.add_argument("--passphrase-file", default=None)
        if name == "restore":
            p.add_argument("--force", action="store_true", help="replace a box that already holds data")
        p.set_defaults(func=fn)
    p = subparsers.add_parser("erase", parents=[c], help="delete all data and keys (asks vendors to delete too)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--wait", type=float, default=ERASE_WAIT_S,
                   help="seconds to wait for the press on the box (daemon running)")
    p.set_defaults(func=cmd_erase)

    audit = subparsers.add_parser("audit", help="the tamper-evident log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    p = audit.add_parser("verify", parents=[c], help="check every hash and signature")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("show", parents=[c], help="page through entries")
    p.add_argument("--offset", type=_audit_count, default=0)
    p.add_argument("--limit", type=_audit_count, default=50)
    p.set_defaults(func=cmd_audit_show)

    prof = subparsers.add_parser("profile", help="your profile fields").add_subparsers(
        dest="profile_command", metavar="ACTION", required=True)
    p = prof.add_parser("show", parents=[c], help="your profile fields and where they came from")
    p.set_defaults(func=lambda a: run_op(a, "profile", {}, _profile_text))
    p = prof.add_parser("set", parents=[c], help="set a field (self-asserted or co-managed)")
    p.add_argument("name")
    p.add_argument("value")
    p.add_argument("--json-value", action="store_true", help="VALUE is JSON")
    p.add_argument("--co-managed", metavar="VENDOR", default=None)
    p.set_defaults(func=cmd_profile_set)
    p = prof.add_parser("annotate", parents=[c], help="add your note (works on read-only fields)")
    p.add_argument("name")
    p.add_argument("text")
    p.set_defaults(func=lambda a: run_op(a, "profile_annotate", {"name": a.name, "annotation": a.text},
                                         f"annotated {a.name}"))
    p = prof.add_parser("delete", parents=[c], help="delete a field you set")
    p.add_argument("name")
    p.set_defaults(func=lambda a: run_op(a, "profile_delete", {"name": a.name}, f"deleted {a.name}"))

    stuff = subparsers.add_parser("stuff", help="products and services you own or use").add_subparsers(
        dest="stuff_command", metavar="ACTION", required=True)
    p = stuff.add_parser("add", parents=[c], help="add a product or service")
    p.add_argument("name")
    for opt in ("--supplier", "--purchase-date", "--currency", "--warranty-end", "--notes"):
        p.add_argument(opt, default=None)
    p.add_argument("--price", type=float, default=None)
    p.set_defaults(func=lambda a: run_op(a, "stuff_add", {
        "name": a.name, "supplier": a.supplier, "purchase_date": a.purchase_date, "price": a.price,
        "currency": a.currency, "warranty_end": a.warranty_end, "notes": a.notes},
        lambda r: f"added {r['name']} ({r['id']})"))
    p = stuff.add_parser("list", parents=[c], help="what you own or use")
    p.set_defaults(func=lambda a: run_op(a, "stuff", {}, lambda rows: "\n".join(
        f"{s['id']}  {s['name']}" + (f"  from {s['supplier']}" if s.get("supplier") else "")
        + (f"  warranty to {s['warranty_end']}" if s.get("warranty_end") else "") for s in rows)
        or "(no stuff)"))

    sup = subparsers.add_parser("suppliers", help="organisations holding your data").add_subparsers(
        dest="suppliers_command", metavar="ACTION", required=True)
    p = sup.add_parser("list", parents=[c], help="who holds your data, by agreement")
    p.set_defaults(func=lambda a: run_op(a, "suppliers", {}, lambda rows: "\n".join(
        f"{s['vendor']}  {s['name']}  agreements in force: {len(s['agreements'])}" for s in rows)
        or "(no suppliers)"))
    p = sup.add_parser("add", parents=[c], help="add a supplier by hand")
    p.add_argument("vendor")
    p.add_argument("name")
    p.add_argument("--notes", default=None)
    p.set_defaults(func=lambda a: run_op(a, "supplier_add", {"vendor": a.vendor, "name": a.name,
                                                             "notes": a.notes},
                                         f"added supplier {a.vendor}"))

    rev = subparsers.add_parser("reviews", help="reviews you wrote (they feed vendor reputation)"
                                ).add_subparsers(dest="reviews_command", metavar="ACTION", required=True)
    p = rev.add_parser("list", parents=[c], help="your reviews")
    p.set_defaults(func=lambda a: run_op(a, "reviews", {}, lambda rows: "\n".join(
        f"{r['vendor']}  {r['rating'] or '-'}/5  {r['text']}" for r in rows) or "(none)"))
    p = rev.add_parser("add", parents=[c], help="review a vendor")
    p.add_argument("vendor")
    p.add_argument("text")
    p.add_argument("--rating", type=int, choices=range(1, 6), default=None)
    p.add_argument("--agreement", default=None, help="the agreement this review is about")
    p.set_defaults(func=lambda a: run_op(a, "review_add", {"vendor": a.vendor, "text": a.text,
                                                           "rating": a.rating, "agreement": a.agreement},
                                         lambda r: f"review {r['id']} of {r['vendor']} saved"))

    cl = subparsers.add_parser("claims", help="verifiable credentials").add_subparsers(
        dest="claims_command", metavar="ACTION", required=True)
    p = cl.add_parser("import", parents=[c], help="import a VC-JWT file")
    p.add_argument("file")
    p.set_defaults(func=cmd_claims_import)
    p = cl.add_parser("list", parents=[c], help="the credentials imported")
    p.set_defaults(func=lambda a: run_op(a, "claims", {}, lambda rows: "\n".join(
        f"{c['id']}  {shown(c['issuer'])}  {','.join(shown(t) for t in c['types'])}  until {c['valid_until']}"
        for c in rows)
        or "(no claims)"))
    p = cl.add_parser("trust", parents=[c], help="trust an issuer did:key")
    p.add_argument("did")
    p.set_defaults(func=lambda a: run_op(a, "claims_trust", {"did": a.did}, f"trusting {a.did}"))
