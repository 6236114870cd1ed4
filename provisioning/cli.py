"""`vrmbox provision`, `vrmbox broker add-vendor`, `vrmbox config check` (see vrmbox/cli.py).

Thin commands: the work is in provisioning/provision.py and device/config/; here are only the
arguments, the messages and the exit codes (0 done, 1 refused).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# The work is imported inside each command: `vrmbox` loads this module for every command.

log = logging.getLogger(__name__)


def _fail(message: str) -> int:
    print(f"vrmbox: {message}", file=sys.stderr)
    return 1


def _show(report: Any, args: argparse.Namespace) -> None:
    lists = {k: [str(p) for p in getattr(report, k)] for k in ("created", "updated", "rotated", "kept")}
    if args.json:
        print(json.dumps({"changed": report.changed, "dry_run": args.dry_run, **lists,
                          "notes": report.notes, "config": str(report.layout.config)}, indent=2))
        return
    verb = {"created": "would create" if args.dry_run else "created",
            "updated": "would update" if args.dry_run else "updated",
            "rotated": "would rotate" if args.dry_run else "rotated"}
    for kind, word in verb.items():
        for p in lists[kind]:
            print(f"{word:13} {p}")
    if not report.changed:
        print(f"nothing to do: all {len(report.kept)} files are present and unchanged "
              f"(config: {report.layout.config})")
    elif not args.dry_run:
        print(f"provisioned; {len(report.kept)} files kept as they were. config: {report.layout.config}")
    for note in report.notes:
        print(f"note: {note}")


def cmd_provision(args: argparse.Namespace) -> int:
    from device import config as device_config
    from provisioning.provision import (HOME_BROKER_BIND, HOME_BROKER_PORT, Market, Options,
                                        ProvisionError, check_market, provision, try_market)
    market = None
    if args.market:
        market = Market(args.market, Path(args.market_ca) if args.market_ca else None,
                        args.market_username,
                        Path(args.market_password_file) if args.market_password_file else None)
    elif args.market_ca or args.market_username or args.market_password_file:
        return _fail("--market-ca, --market-username and --market-password-file need --market URL")
    opts = Options(root=Path(args.root) if args.root else None, dry_run=args.dry_run,
                   rotate=args.rotate, market=market, check_market=not args.no_market_check,
                   broker_port=args.broker_port or HOME_BROKER_PORT,
                   broker_bind=args.broker_bind or HOME_BROKER_BIND,
                   names=tuple(args.name or ()), board=args.board)
    try:
        if args.board is not None:
            from hardware.profile import ProfileError, load_profile
            try:
                load_profile(args.board)
            except ProfileError as exc:
                return _fail(f"--board {args.board}: {exc}")
        if market is not None and opts.check_market:
            check_market(market)
            try_market(market)
        report = provision(opts)
    except (ProvisionError, device_config.ConfigError) as exc:
        return _fail(str(exc))
    except RuntimeError as exc:          # mosquitto_passwd failed, no account to run Mosquitto as
        return _fail(str(exc))
    _show(report, args)
    return 0


def cmd_add_vendor(args: argparse.Namespace) -> int:
    from provisioning import mosquitto
    from provisioning.layout import layout_for
    from provisioning.provision import ProvisionError, add_vendor
    lay = layout_for(Path(args.root) if args.root else None, os.geteuid())
    out = Path(args.out) if args.out else None
    if out is not None and out.exists():
        return _fail(f"{out} exists; choose another --out file (it is never overwritten)")
    try:
        password = add_vendor(lay, args.slug, rotate=args.rotate)
    except ProvisionError as exc:
        return _fail(str(exc))
    if out is not None:
        from vrm_io.files import write_private_file
        write_private_file(out, (password + "\n").encode(), exclusive=True)   # synced, never over a file
    listener = mosquitto.read_listener(lay.broker_conf.read_text()) if lay.broker_conf.exists() else None
    info: dict[str, Any] = {"vendor": args.slug, "username": args.slug, "passwd": str(lay.passwd),
                            "ca_file": str(lay.pem("ca")),
                            "broker_port": listener.port if listener else None}
    if out is not None:
        info["password_file"] = str(out)
    reloaded = False
    if args.reload:
        systemctl = shutil.which("systemctl")
        if systemctl is None:
            return _fail("--reload needs systemd; send SIGHUP to the broker instead")
        p = subprocess.run([systemctl, "reload", "mosquitto"], capture_output=True, text=True)
        if p.returncode != 0:
            return _fail(f"systemctl reload mosquitto failed: {p.stderr.strip()}")
        reloaded = True
    info["reloaded"] = reloaded
    if args.json:
        if out is None:
            info["password"] = password
        print(json.dumps(info, indent=2))
        return 0
    print(f"vendor account {args.slug!r} issued in {lay.passwd}")
    if out is None:
        print(f"password (shown once): {password}")
    else:
        print(f"password written to {out} (mode 0600)")
    print(f"the vendor connects with TLS, trusting {lay.pem('ca')}")
    if not reloaded:
        print("reload the broker so it takes effect: `systemctl reload mosquitto` "
              "(or send SIGHUP to the mosquitto process)")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from device import config as device_config
    from device.daemon.access import AccessConfigError
    from device.textsafe import printable
    from provisioning.layout import layout_for
    path = Path(args.file) if args.file else Path(args.config) if args.config else None
    if path is None:
        provisioned = layout_for(None, os.geteuid()).config
        if not os.environ.get(device_config.ENV_CONFIG) and not device_config.SYSTEM_CONFIG.is_file() \
                and provisioned.is_file():
            path = provisioned
    if args.file and args.config and Path(args.file) != Path(args.config):
        print("vrmbox: config check: a FILE and --config name two different files; give one",
              file=sys.stderr)
        return 2
    try:
        cfg = device_config.load_config(path, {}, reader=device_config.CHECK)
        secrets = secret_files(cfg)
        _check_access(cfg)
    except (device_config.ConfigError, AccessConfigError) as exc:
        print(f"vrmbox: {printable(str(exc))}", file=sys.stderr)
        where = path or os.environ.get(device_config.ENV_CONFIG) or device_config.SYSTEM_CONFIG
        key = getattr(exc, "key", None)
        what = f"'{key}'" if key else "the file" if isinstance(exc, device_config.ConfigError) else "it"
        print(f"fix: correct {what} in {printable(str(where))} as the message says, then run "
              "`vrmbox config check` again", file=sys.stderr)
        return 1
    where = str(cfg.source) if cfg.source else "built-in defaults (no config file found)"
    problems = [s for s in secrets if s["problem"]]
    if args.json:
        print(json.dumps({"ok": not problems, "source": where, "broker": cfg.broker.url,
                          "data_dir": str(cfg.data_dir), "secrets": secrets,
                          "ui_profile": cfg.ui.profile}))
    else:
        print(f"config OK: {printable(where)}; broker {cfg.broker.url}, data in {printable(str(cfg.data_dir))}")
        for s in secrets:
            print(f"  secret {s['key']} = {s['path']}: read by {s['account']}"
                  + (f": {s['problem']}" if s["problem"] else ""))
    return 1 if problems else 0


def _check_access(cfg: Any) -> None:
    """The daemon's own check of the socket allow-lists (device/daemon/access.py), for the user
    the daemon runs as: the box's account on an installed box, else whoever runs this."""
    import pwd

    from device.daemon.access import build_access
    from provisioning import accounts
    from provisioning.layout import layout_for
    installed = cfg.source is not None and Path(cfg.source) == layout_for(Path("/"), 0).config
    try:
        own = pwd.getpwnam(accounts.BOX_USER).pw_uid if installed else os.geteuid()
    except KeyError:
        own = os.geteuid()
    c = cfg.control
    build_access(own, c.control_users, c.control_groups, c.button_users, c.button_groups)


def secret_files(cfg: Any) -> list[dict[str, Any]]:
    """Each secret file the config names, the account that reads it, and what stops it (seen
    from its owner and mode, so root can check for the other accounts without reading it)."""
    import pwd
    import stat as stat_mod

    from device.config.keys import BY_NAME, PROCESS_USER
    found = []
    for section, value in (("broker", cfg.broker), ("home_broker", cfg.home_broker), ("companion", cfg.companion)):
        path = getattr(value, "password_file" if section != "companion" else "secret_file", None) if value else None
        if path is None:
            continue
        key = f"{section}.{'password_file' if section != 'companion' else 'secret_file'}"
        (reader,) = BY_NAME[key].readers
        account = PROCESS_USER[reader]
        problem = ""
        try:
            st = Path(path).stat()
            uid = pwd.getpwnam(account).pw_uid
            if st.st_uid != uid or not st.st_mode & stat_mod.S_IRUSR:
                problem = f"not readable by {account} (owner uid {st.st_uid}, mode {stat_mod.S_IMODE(st.st_mode):o})"
            elif stat_mod.S_IMODE(st.st_mode) & 0o077:
                problem = f"mode {stat_mod.S_IMODE(st.st_mode):o}: should be 600"
        except FileNotFoundError:
            problem = "missing"
        except KeyError:
            problem = ""          # no such account: a development setup, one user reads all
        except OSError as exc:
            problem = f"cannot be checked ({exc.strerror})"
        found.append({"key": key, "path": str(path), "account": account, "problem": problem})
    return found


def register(subparsers: Any) -> None:
    """Add provision, broker and config commands to `vrmbox`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--root", default=None, metavar="DIR",
                        help="write everything under DIR as if it were / (tests, packaging, a second box)")

    p = subparsers.add_parser("provision", parents=[common],
                              help="first boot: keys, secrets, certificates, broker config (idempotent)")
    p.add_argument("--dry-run", action="store_true", help="show what would be written; change nothing")
    p.add_argument("--rotate", action="store_true",
                   help="re-issue the broker password, companion secret and certificates (audited)")
    p.add_argument("--market", metavar="URL", help="market broker, mqtts://host[:port]")
    p.add_argument("--market-ca", metavar="FILE", help="CA certificate of the market broker (PEM)")
    p.add_argument("--market-username", metavar="NAME", help="account the market operator issued")
    p.add_argument("--market-password-file", metavar="FILE", help="file holding that account's password")
    p.add_argument("--no-market-check", action="store_true",
                   help="do not try the market broker's credentials now (e.g. offline first boot)")
    p.add_argument("--board", metavar="PROFILE", default=None,
                   help="the board the box's face drives (vrmbox hardware list); sets ui.profile")
    p.add_argument("--broker-port", type=int, default=None, help="home broker's TLS port (8883)")
    p.add_argument("--broker-bind", default=None, help="home broker's listen address (all)")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="another DNS name or IP for the box's certificates (repeatable)")
    p.set_defaults(func=cmd_provision)

    broker = subparsers.add_parser("broker", help="the box's home broker").add_subparsers(
        dest="broker_command", metavar="COMMAND", required=True)
    p = broker.add_parser("add-vendor", parents=[common],
                          help="issue a vendor account on the home/demo broker")
    p.add_argument("slug", help="the vendor's slug (its account name)")
    p.add_argument("--out", metavar="FILE", help="write the password to FILE (0600) instead of printing it")
    p.add_argument("--rotate", action="store_true", help="issue a new password for an existing account")
    p.add_argument("--reload", action="store_true", help="systemctl reload mosquitto afterwards")
    p.set_defaults(func=cmd_add_vendor)

    cfg = subparsers.add_parser("config", help="the box's config file").add_subparsers(
        dest="config_command", metavar="COMMAND", required=True)
    p = cfg.add_parser("check", help="validate a config file; name each bad key and value")
    p.add_argument("file", nargs="?", help="default: $VRMBOX_CONFIG, /etc/vrmbox/config.toml")
    p.add_argument("--config", metavar="FILE", help="the same as FILE (every command takes --config)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config_check)
