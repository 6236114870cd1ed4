"""`vrmbox` command line. Each area registers its own subcommands, so this file stays small.

Subcommand modules expose `register(subparsers)`; each subcommand sets `func(args) -> int`.
Every command takes --json for scripting.
"""
from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from companion_app import cli as companion_cli
from demo import cli as demo_cli
from device.cli import data as data_cli
from device.cli import market as market_cli
from device.cli.as_box import drop_to_box_account
from device.ui import cli as ui_cli
from hardware import cli as hardware_cli
from provisioning import cli as provisioning_cli
from vrm_io.about import version_line

# The command table, in the order `vrmbox --help` lists the groups. The demo comes last: it
# reads the finished table to know which front ends it can start.
COMMAND_MODULES: tuple[ModuleType, ...] = (data_cli, market_cli, provisioning_cli, hardware_cli, ui_cli,
                                           companion_cli, demo_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrmbox", description="VRM box: your data, your terms.")
    parser.add_argument("--version", action="version", version=version_line("vrmbox"))
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
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
