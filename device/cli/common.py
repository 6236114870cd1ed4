"""What every `vrmbox` command shares: its options, the one way to find the config and the data
dir, the one way to reach the box (through the daemon, or offline on the store), and output.

Why one module: the data dir and the config used to be resolved twice, differently; a typo in
the config then made a data command quietly open a new empty box. Now every command reads the
config the same way and refuses a bad one; commands that only read need an existing box.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

from ..client import ControlError, DaemonNotRunning, call, daemon_running
from ..config import CLI, Config, ConfigError, load_config
from ..keystore import DecryptError, KeyFileError
from ..market import Market, MarketError, market_settings
from ..store.migrations import SchemaError
from ..store import Store, StoreError
from ..textsafe import printable

log = logging.getLogger(__name__)

STORE_FILE = "store.db"

# How a service (daemon, face, phone app) exits when restarting cannot help: sysexits.h, which
# systemd names in `systemctl status` (78/CONFIG, 69/UNAVAILABLE). The units list both in
# RestartPreventExitStatus=, so the unit stops as failed and its status keeps the one-line reason
# instead of losing it in a restart loop (tests/test_systemd_units.py checks they agree).
EXIT_CONFIG = os.EX_CONFIG             # a bad config, profile or secret
EXIT_UNAVAILABLE = os.EX_UNAVAILABLE   # the board or a package it needs is missing


class CliError(RuntimeError):
    """A command cannot go on; the message says why (printed without a traceback)."""


# Errors a command turns into "error: ..." and exit 1.
EXPECTED = (CliError, MarketError, StoreError, ConfigError, KeyFileError, DecryptError, SchemaError,
            ControlError, sqlite3.DatabaseError, OSError, ValueError)


def common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--data-dir", type=Path, default=None, help="box data directory")
    p.add_argument("--config", type=Path, default=None,
                   help="config file (TOML; default $VRMBOX_CONFIG, else /etc/vrmbox/config.toml)")
    return p


def config(args: argparse.Namespace, reader: str = CLI) -> Config:
    """The config: --config, $VRMBOX_CONFIG or the system file; --data-dir and --broker on top.
    `reader` is the process loading it (device/config/keys.py: each checks its own keys' files)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = str(Path(args.data_dir).expanduser())
    if getattr(args, "broker", None):
        overrides["broker.url"] = args.broker
    return load_config(getattr(args, "config", None), overrides, reader=reader)


def has_box(data_dir: Path) -> bool:
    return (Path(data_dir) / STORE_FILE).is_file()


def open_store(cfg: Config, create: bool = False) -> Store:
    """The box's store; a read must not create a new, empty box with new keys."""
    if not create and not has_box(cfg.data_dir):
        raise CliError(f"no box data in {cfg.data_dir} (wrong --data-dir or config? "
                       "a new box is made by `vrmbox provision` or the first change)")
    return Store.open(cfg.data_dir)


def running_daemon(cfg: Config) -> Path | None:
    """The control socket of a daemon running on this data dir, if one is."""
    path = Path(cfg.control.socket)
    return path if daemon_running(path) else None


def operate(args: argparse.Namespace, op: str, op_args: dict[str, Any], *,
            socket: str = "control") -> Any:
    """One operation (device/daemon/ops.py): through the running daemon if there is one, else
    offline on the store as the box's own user (never a press: see ops.run_offline)."""
    cfg = config(args)
    sock = cfg.control.button if socket == "button" else Path(cfg.control.socket)
    try:
        return call(sock, op, op_args)
    except DaemonNotRunning:
        pass
    from ..daemon.ops import OPS, run_offline   # not at import time: the CLI starts fast
    spec = OPS.get(op)
    with open_store(cfg, create=bool(spec and spec.writes)) as store:
        return run_offline(Market(store, market_settings(cfg)), op, op_args)


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name != "identity"}
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def out(args: argparse.Namespace, result: Any, text: str | Callable[[Any], str]) -> None:
    """JSON with --json (escaped by the encoder), else the text made terminal-safe line by line."""
    if args.json:
        print(json.dumps(jsonable(result), ensure_ascii=False, sort_keys=True, default=str))
        return
    shown = text(result) if callable(text) else text
    print("\n".join(printable(line) for line in str(shown).split("\n")))


def fail(args: argparse.Namespace, message: str, code: int = 1) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}))
    else:
        print(f"error: {printable(message)}", file=sys.stderr)
    return code


def run_op(args: argparse.Namespace, op: str, op_args: dict[str, Any],
           text: str | Callable[[Any], str] = lambda r: json.dumps(r, indent=2, default=str,
                                                                    ensure_ascii=False),
           **kw: Any) -> int:
    """A command that is one operation: run it, print the result or the error."""
    try:
        result = operate(args, op, op_args, **kw)
    except EXPECTED as exc:
        return fail(args, str(exc))
    out(args, result, text)
    return 0


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected errors become a message and exit 1, never a traceback."""
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except DecryptError as exc:
            return fail(args, f"the store is damaged: {exc}")
        except EXPECTED as exc:
            return fail(args, str(exc))
    return handler
