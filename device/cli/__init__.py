"""`vrmbox` command line. Each area registers its own subcommands, so this file stays small.

Subcommand modules expose `register(subparsers)`; each subcommand sets `func(args) -> int`.
Every command takes --json for scripting.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vrm_protocol.messages import VERSION as PROTOCOL_VERSION

from .as_box import drop_to_box_account

# Modules that add subcommands; a module missing here (not written yet) is simply skipped.
COMMAND_MODULES = ("device.cli.data", "device.cli.market", "provisioning.cli", "hardware.cli",
                   "device.ui.cli", "companion_app.cli", "provisioning.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrmbox", description="VRM box: your data, your terms.")
    parser.add_argument("--version", action="version", version=f"vrmbox 0.1.0 (VRM protocol v{PROTOCOL_VERSION})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    drop_to_box_account(args.command)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
