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
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

from . import claims as claims_mod
from . import erase as erase_mod
from . import portability
from .keystore import DecryptError, KeyFileError
from .migrations import SchemaError
from .store import Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("~/.local/share/vrmbox")
ERASE_CONFIRMATION = "erase everything"


def default_data_dir() -> Path:
    """--data-dir, else $VRMBOX_DATA_DIR, else the config file's data_dir, else ~/.local/share/vrmbox."""
    env = os.environ.get("VRMBOX_DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        from . import config  # owned by the rules helper; optional here
        cfg = config.load_config(None, {})
        data_dir = getattr(cfg, "data_dir", None)
        if data_dir:
            return Path(data_dir).expanduser()
    except (ImportError, AttributeError, OSError, ValueError, TypeError) as exc:
        log.debug("no data_dir from config: %s", exc)
    return DEFAULT_DATA_DIR.expanduser()


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--data-dir", type=Path, default=None, help="box data directory")
    return p


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name != "identity"}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _out(args: argparse.Namespace, obj: Any, text: str) -> None:
    if args.json:
        print(json.dumps(_jsonable(obj), ensure_ascii=False, sort_keys=True))
    else:
        print(text)


def _fail(args: argparse.Namespace, message: str, code: int = 1) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def _with_store(fn: Callable[[argparse.Namespace, Store], int]) -> Callable[[argparse.Namespace], int]:
    """Open the store, run the handler, turn expected errors into a message and exit code 1."""
    def handler(args: argparse.Namespace) -> int:
        try:
            store = Store.open(_data_dir(args))
        except (KeyFileError, SchemaError, sqlite3.DatabaseError, OSError) as exc:
            return _fail(args, f"cannot open the store: {exc}")
        try:
            return fn(args, store)
        except (StoreError, portability.PortabilityError, claims_mod.ClaimError) as exc:
            return _fail(args, str(exc))
        except DecryptError as exc:  # a sealed value was altered: say so, no traceback
            return _fail(args, f"the store is damaged: {exc}")
        finally:
            store.close()
    return handler


def _running_daemon(args: argparse.Namespace) -> Path | None:
    """The control socket of a daemon running on this data dir, if one is."""
    from . import config, control
    data_dir = _data_dir(args)
    try:
        path = Path(config.load_config(None, {"data_dir": str(data_dir)}).control.socket)
    except (ValueError, OSError):
        path = data_dir / "control.sock"
    return path if control.daemon_running(path) else None


def _no_daemon(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Replacing the keys under a running daemon would leave it sealing rows with the old ones."""
    def handler(args: argparse.Namespace) -> int:
        if _running_daemon(args):
            return _fail(args, "the box daemon is running; stop it first (systemctl stop vrmbox)")
        return fn(args)
    return handler


def _passphrase(args: argparse.Namespace, confirm: bool) -> str:
    """--passphrase-file, else $VRMBOX_PASSPHRASE, else a prompt (only on a terminal)."""
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
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
    _out(args, {"ok": True, "file": str(args.file), "audit_entries": n},
         f"exported everything to {args.file} ({n} audit entries). It holds your data in the clear.")
    return 0


@_no_daemon
@_with_store
def cmd_import(args: argparse.Namespace, store: Store) -> int:
    doc = portability.import_from_file(store, Path(args.file), force=args.force)
    _out(args, {"ok": True, "audit_entries": len(doc.entries), "from_device": doc.device_did},
         f"imported {args.file} ({len(doc.entries)} audit entries)")
    return 0


@_with_store
def cmd_backup(args: argparse.Namespace, store: Store) -> int:
    portability.backup_to_file(store, Path(args.file), _passphrase(args, confirm=True))
    _out(args, {"ok": True, "file": str(args.file)}, f"encrypted backup written to {args.file}")
    return 0


@_no_daemon
@_with_store
def cmd_restore(args: argparse.Namespace, store: Store) -> int:
    doc = portability.restore_from_file(store, Path(args.file), _passphrase(args, confirm=False),
                                        force=args.force)
    _out(args, {"ok": True, "audit_entries": len(doc.entries), "device_did": doc.device_did},
         f"restored {args.file} ({len(doc.entries)} audit entries)")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail(args, "erase needs --yes or a typed confirmation on a terminal", 2)
        print("This deletes ALL your data and keys. Vendors with active agreements are asked to "
              "delete what you shared.")
        if input(f'Type "{ERASE_CONFIRMATION}" to continue: ').strip() != ERASE_CONFIRMATION:
            return _fail(args, "not confirmed; nothing was erased", 2)
    sock = _running_daemon(args)
    if sock is not None:  # the daemon holds the keys: it erases, and tells vendors at once
        from . import control
        try:
            out = control.call(sock, "erase", {}, timeout=300)
        except control.ControlError as exc:
            return _fail(args, f"erase failed: {exc}")
        _out(args, out, f"erased. {out['deletion_requests']} deletion request(s) sent to vendors.")
        return 0
    try:
        result = erase_mod.erase(_data_dir(args))
    except (SchemaError, sqlite3.DatabaseError, OSError) as exc:
        return _fail(args, f"erase failed: {exc}")
    _out(args, {"ok": True, **dataclasses.asdict(result)},
         f"erased. {result.deletion_requests} deletion request(s) queued for vendors.")
    return 0


@_with_store
def cmd_audit_verify(args: argparse.Namespace, store: Store) -> int:
    r = store.audit.verify()
    text = (f"audit log OK ({r.count} entries)" if r.ok else
            f"audit log BROKEN: first bad entry {r.first_bad}: {r.reason}" if r.first_bad is not None
            else f"audit log BROKEN: {r.reason}")
    if args.json:
        _out(args, r.to_dict(), text)
    elif r.ok:
        print(text)
    else:
        print(text, file=sys.stderr)
    return 0 if r.ok else 1


@_with_store
def cmd_audit_show(args: argparse.Namespace, store: Store) -> int:
    entries = store.audit.entries(args.offset, args.limit)
    lines = [f"{e.seq:6d}  {e.created_at}  {e.event_type:24s} {json.dumps(e.data, sort_keys=True)}"
             for e in entries]
    _out(args, {"total": store.audit.count(), "offset": args.offset, "entries": entries},
         "\n".join(lines) or "(no entries)")
    return 0


@_with_store
def cmd_profile_show(args: argparse.Namespace, store: Store) -> int:
    prof = store.get_profile()
    lines = []
    for f in prof.values():
        src = f" ({f.provenance}{': ' + f.source if f.source else ''})"
        lines.append(f"{f.name} = {json.dumps(f.value, ensure_ascii=False)}{src}"
                     + (f"  # {f.annotation}" if f.annotation else ""))
    _out(args, list(prof.values()), "\n".join(lines) or "(empty profile)")
    return 0


@_with_store
def cmd_profile_set(args: argparse.Namespace, store: Store) -> int:
    value: Any = args.value
    if args.json_value:
        try:
            value = json.loads(args.value)
        except ValueError as exc:
            raise StoreError("VALUE is not JSON (drop --json-value for plain text)") from exc
    provenance, source = ("co-managed", args.co_managed) if args.co_managed else ("self", None)
    store.set_profile_field(args.name, value, provenance=provenance, source=source)
    _out(args, {"ok": True, "field": args.name, "provenance": provenance}, f"set {args.name}")
    return 0


@_with_store
def cmd_profile_annotate(args: argparse.Namespace, store: Store) -> int:
    store.annotate_profile_field(args.name, args.text)
    _out(args, {"ok": True, "field": args.name}, f"annotated {args.name}")
    return 0


@_with_store
def cmd_stuff_add(args: argparse.Namespace, store: Store) -> int:
    rec = store.add_stuff(args.name, supplier=args.supplier, purchase_date=args.purchase_date,
                          price=args.price, currency=args.currency, warranty_end=args.warranty_end,
                          notes=args.notes)
    _out(args, rec, f"added {rec.name} ({rec.id})")
    return 0


@_with_store
def cmd_stuff_list(args: argparse.Namespace, store: Store) -> int:
    items = store.list_stuff()
    _out(args, items, "\n".join(f"{s.id}  {s.name}" + (f"  from {s.supplier}" if s.supplier else "")
                                + (f"  warranty to {s.warranty_end}" if s.warranty_end else "")
                                for s in items) or "(no stuff)")
    return 0


@_with_store
def cmd_suppliers_list(args: argparse.Namespace, store: Store) -> int:
    sups = store.list_suppliers()
    _out(args, sups, "\n".join(f"{s.vendor}  {s.name}  agreements in force: {len(s.agreements)}"
                               for s in sups) or "(no suppliers)")
    return 0


@_with_store
def cmd_suppliers_add(args: argparse.Namespace, store: Store) -> int:
    store.add_supplier(args.vendor, args.name, args.notes)
    _out(args, {"ok": True, "vendor": args.vendor}, f"added supplier {args.vendor}")
    return 0


@_with_store
def cmd_reviews_add(args: argparse.Namespace, store: Store) -> int:
    r = store.add_review(args.vendor, args.text, args.rating, args.agreement)
    _out(args, {"ok": True, "id": r.id, "vendor": r.vendor}, f"review {r.id} of {r.vendor} saved")
    return 0


@_with_store
def cmd_reviews_list(args: argparse.Namespace, store: Store) -> int:
    rows = store.list_reviews()
    _out(args, rows, "\n".join(f"{r.vendor}  {r.rating or '-'}/5  {r.text}" for r in rows) or "(none)")
    return 0


@_with_store
def cmd_claims_import(args: argparse.Namespace, store: Store) -> int:
    try:
        token = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise claims_mod.ClaimError(f"cannot read {args.file}: {exc}") from exc
    rec = claims_mod.import_claim(store, token)
    _out(args, {k: v for k, v in _jsonable(rec).items() if k != "jwt"},
         f"imported claim {rec.id} from {rec.issuer}: {', '.join(rec.types)}")
    return 0


@_with_store
def cmd_claims_list(args: argparse.Namespace, store: Store) -> int:
    items = store.list_claims()
    _out(args, [{k: v for k, v in _jsonable(c).items() if k != "jwt"} for c in items],
         "\n".join(f"{c.id}  {c.issuer}  {','.join(c.types)}  until {c.valid_until}" for c in items)
         or "(no claims)")
    return 0


@_with_store
def cmd_claims_trust(args: argparse.Namespace, store: Store) -> int:
    claims_mod.trust_issuer(store, args.did)
    _out(args, {"ok": True, "trusted_issuers": claims_mod.trusted_issuers(store)}, f"trusting {args.did}")
    return 0


# ------------------------------------------------------------------ registration
def register(subparsers: Any) -> None:
    """Add this area's subcommands to the `vrmbox` parser (see device/cli.py)."""
    c = _common()

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
    p.set_defaults(func=cmd_erase)

    audit = subparsers.add_parser("audit", help="the tamper-evident log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    p = audit.add_parser("verify", parents=[c], help="check every hash and signature")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("show", parents=[c], help="page through entries")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_audit_show)

    prof = subparsers.add_parser("profile", help="your profile fields").add_subparsers(
        dest="profile_command", metavar="ACTION", required=True)
    p = prof.add_parser("show", parents=[c])
    p.set_defaults(func=cmd_profile_show)
    p = prof.add_parser("set", parents=[c], help="set a field (self-asserted or co-managed)")
    p.add_argument("name")
    p.add_argument("value")
    p.add_argument("--json-value", action="store_true", help="VALUE is JSON")
    p.add_argument("--co-managed", metavar="VENDOR", default=None)
    p.set_defaults(func=cmd_profile_set)
    p = prof.add_parser("annotate", parents=[c], help="add your note (works on read-only fields)")
    p.add_argument("name")
    p.add_argument("text")
    p.set_defaults(func=cmd_profile_annotate)

    stuff = subparsers.add_parser("stuff", help="products and services you own or use").add_subparsers(
        dest="stuff_command", metavar="ACTION", required=True)
    p = stuff.add_parser("add", parents=[c])
    p.add_argument("name")
    for opt in ("--supplier", "--purchase-date", "--currency", "--warranty-end", "--notes"):
        p.add_argument(opt, default=None)
    p.add_argument("--price", type=float, default=None)
    p.set_defaults(func=cmd_stuff_add)
    p = stuff.add_parser("list", parents=[c])
    p.set_defaults(func=cmd_stuff_list)

    sup = subparsers.add_parser("suppliers", help="organisations holding your data").add_subparsers(
        dest="suppliers_command", metavar="ACTION", required=True)
    p = sup.add_parser("list", parents=[c])
    p.set_defaults(func=cmd_suppliers_list)
    p = sup.add_parser("add", parents=[c])
    p.add_argument("vendor")
    p.add_argument("name")
    p.add_argument("--notes", default=None)
    p.set_defaults(func=cmd_suppliers_add)

    rev = subparsers.add_parser("reviews", help="reviews you wrote (they feed vendor reputation)"
                                ).add_subparsers(dest="reviews_command", metavar="ACTION", required=True)
    p = rev.add_parser("list", parents=[c])
    p.set_defaults(func=cmd_reviews_list)
    p = rev.add_parser("add", parents=[c])
    p.add_argument("vendor")
    p.add_argument("text")
    p.add_argument("--rating", type=int, choices=range(1, 6), default=None)
    p.add_argument("--agreement", default=None, help="the agreement this review is about")
    p.set_defaults(func=cmd_reviews_add)

    cl = subparsers.add_parser("claims", help="verifiable credentials").add_subparsers(
        dest="claims_command", metavar="ACTION", required=True)
    p = cl.add_parser("import", parents=[c], help="import a VC-JWT file")
    p.add_argument("file")
    p.set_defaults(func=cmd_claims_import)
    p = cl.add_parser("list", parents=[c])
    p.set_defaults(func=cmd_claims_list)
    p = cl.add_parser("trust", parents=[c], help="trust an issuer did:key")
    p.add_argument("did")
    p.set_defaults(func=cmd_claims_trust)
