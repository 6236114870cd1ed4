"""`vrm-vendor` command line (the vendor kit).

    vrm-vendor init --dir DIR --vendor SLUG --name NAME --categories bikes,tents [--url U] [--json]
    vrm-vendor run --dir DIR --broker mqtt://HOST:PORT --catalogue FILE [--share-group G]
                   [--client-id ID] [--username U --password-file F] [--tls-ca FILE]
    vrm-vendor offers|agreements|disclosures|intents --dir DIR [--json]

`run` prints one line `READY` on stdout once subscribed; logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import faulthandler
import signal
import sys
import time
from pathlib import Path
from typing import Any

from vrm_io.about import version_line

from .catalogue import Catalogue, CatalogueError
from .identity import IdentityError, VendorIdentity
from .ledger import LEDGER_FILE, Ledger
from .core import ResendPolicy
from .worker import BrokerSettings, VendorWorker

log = logging.getLogger("vrm-vendor")
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600


def _csv(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _count(text: str) -> int:
    """A whole number 0 .. 1000 (argparse says which argument, without a traceback)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"must be 0 .. 1000, not {n}")
    return n


def cmd_init(args: argparse.Namespace) -> int:
    ident = VendorIdentity.create(args.dir, vendor=args.vendor, name=args.name, categories=_csv(args.categories),
                                  url=args.url)
    if args.json:
        print(json.dumps({"vendor": ident.vendor, "did": ident.did, "enc_key": ident.enc_key.as_jwk()}))
    else:
        print(ident.did)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    ident = VendorIdentity.load(args.dir)
    catalogue = Catalogue.load(args.catalogue)
    password = None
    if args.password_file:
        if args.username is None:
            raise ValueError("--password-file needs --username")
        lines = Path(args.password_file).read_text().splitlines()
        password = lines[0] if lines else ""
    expiry = args.session_expiry if args.session_expiry is not None else (
        DEFAULT_SESSION_EXPIRY_S if args.client_id else 0)
    if expiry and not args.client_id:
        raise ValueError("--session-expiry needs --client-id (a session belongs to a client id)")
    settings = BrokerSettings.from_url(args.broker, tls_ca=args.tls_ca, username=args.username, password=password,
                                       client_id=args.client_id, share_group=args.share_group,
                                       session_expiry_s=expiry)

    def ready() -> None:
        print("READY", flush=True)

    with Ledger.in_dir(args.dir) as ledger:
        resend = ResendPolicy(first_s=args.resend_first, factor=args.resend_factor,
                              max_s=max(args.resend_max, args.resend_first), limit=args.resend_limit)
        worker = VendorWorker(ident, catalogue, ledger, settings, on_ready=ready, resend=resend)

        def on_signal(signum: int, frame: object) -> None:
            # Only plain attributes are set here: no Event.set(), no logging (both take locks the
            # interrupted main thread may be holding). The run loop notices within a tick.
            worker.request_stop(f"signal {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run()
    return 0


def _show(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> int:
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("(none)")
        return 0
    for r in rows:
        print("  ".join(f"{c}={_short(r.get(c))}" for c in columns))
    return 0


def _short(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, int) and v > 1_000_000_000:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v))
    return str(v)


def _ledger(args: argparse.Namespace) -> Ledger:
    if not (Path(args.dir) / LEDGER_FILE).exists():
        VendorIdentity.load(args.dir)  # a clear error if DIR is not a vendor directory at all
    return Ledger.in_dir(args.dir)


def cmd_offers(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        return _show(ledger.list_offers(), args.json,
                     ("intent", "sku", "price", "currency", "decision", "valid_until", "client_id", "delivery",
                      "resends", "rearms"))


def cmd_agreements(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        return _show(ledger.list_agreements(), args.json,
                     ("id", "intent", "sku", "fields", "purpose", "duration_days", "revoked_at", "deleted"))


def cmd_disclosures(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        return _show(ledger.list_disclosures(), args.json, ("agreement", "intent", "purpose", "fields"))


def cmd_intents(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        return _show(ledger.list_intents(), args.json,
                     ("intent", "category", "status", "offers", "received_at", "client_id"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrm-vendor", description="Answer VRM intents with signed offers.")
    parser.add_argument("--version", action="version", version=version_line("vrm-vendor"))
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a vendor identity (keys) in a new directory")
    p.add_argument("--dir", required=True, help="vendor directory (created 0700)")
    p.add_argument("--vendor", required=True, help="vendor slug, e.g. acme-bikes")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--categories", required=True, help="comma-separated categories, e.g. bikes,tents")
    p.add_argument("--url", help="vendor web site")
    p.add_argument("--json", action="store_true", help="print {vendor, did, enc_key}")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", help="answer intents until SIGTERM")
    p.add_argument("--dir", required=True)
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--catalogue", required=True, help="catalogue file (YAML or JSON)")
    p.add_argument("--share-group", help="MQTT 5 shared-subscription group: workers with the same DIR "
                                         "and group share the load")
    p.add_argument("--client-id", help="MQTT client id, unique per worker (default: random per process). "
                                       "With a fixed id the worker keeps a persistent session")
    p.add_argument("--session-expiry", type=int, metavar="SECONDS",
                   help=f"persistent-session expiry (default {DEFAULT_SESSION_EXPIRY_S} with --client-id, "
                        "else 0 = clean session)")
    p.add_argument("--username")
    p.add_argument("--password-file", help="file whose first line is the MQTT password")
    p.add_argument("--tls-ca", help="CA certificate file; enables TLS")
    default = ResendPolicy()
    p.add_argument("--resend-first", type=float, default=default.first_s, metavar="SECONDS",
                   help=f"send an offer again if the box has not receipted it this long after it was sent "
                        f"(default {default.first_s:g})")
    p.add_argument("--resend-factor", type=float, default=default.factor,
                   help=f"each further wait is this many times the last (default {default.factor:g})")
    p.add_argument("--resend-max", type=float, default=default.max_s, metavar="SECONDS",
                   help=f"longest wait between re-sends (default {default.max_s:g})")
    p.add_argument("--resend-limit", type=_count, default=default.limit, metavar="N",
                   help=f"re-sends per offer before giving up on it (default {default.limit}); an offer a "
                        "receipt of its intent shows lost goes out again within seconds")
    p.set_defaults(func=cmd_run)

    for name, func, what in (("offers", cmd_offers, "offers sent"),
                             ("agreements", cmd_agreements, "agreements countersigned"),
                             ("disclosures", cmd_disclosures, "data disclosed to us (decrypted)"),
                             ("intents", cmd_intents, "intents seen and how they were answered")):
        p = sub.add_parser(name, help=f"show {what}")
        p.add_argument("--dir", required=True)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faulthandler.enable()  # a hung or crashed worker leaves every thread's stack in its log
    except (ValueError, OSError, AttributeError):  # stderr is not a real file (e.g. in-process tests)
        pass
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (IdentityError, CatalogueError, ValueError, OSError) as exc:
        print(f"vrm-vendor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
