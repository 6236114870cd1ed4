"""`vrmbox companion` (serve the phone app with cheroot, over HTTPS when provisioned, advertise it by mDNS), `vrmbox pair`
(a fresh one-time code) and `vrmbox phones [unpair ID]`."""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from companion_app.security import SECRET_FILE
from device.cli.common import EXIT_CONFIG, EXPECTED
from device.textsafe import printable

log = logging.getLogger(__name__)

SERVICE_TYPES = {"http": "_http._tcp.local.", "https": "_https._tcp.local."}
SERVICE_TYPE = SERVICE_TYPES["http"]
SERVICE_NAME = "VRM box"
WATCHDOG_S = 10.0                 # the unit's WatchdogSec is 30


def _config(args: argparse.Namespace) -> Any:
    from device.cli.common import config
    from device.config import COMPANION
    return config(args, reader=COMPANION)


def _fail(args: argparse.Namespace, message: str, code: int = 1) -> int:
    from device.cli.common import fail
    return fail(args, message, code)


def _operate(args: argparse.Namespace, op: str, op_args: dict[str, Any]) -> Any:
    """The daemon's operation if it runs, else the same one on the store (the box's own user)."""
    from device.cli.common import operate
    return operate(args, op, op_args)


def is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (what the phone will connect to)."""
    from zeroconf import get_all_addresses
    return [a for a in get_all_addresses() if not ipaddress.ip_address(a).is_loopback]


def advertise(bind: str, port: int | str, scheme: str = "http") -> Any:
    """Register "VRM box" as _http._tcp or _https._tcp on the LAN; returns the Zeroconf to close,
    or None."""
    from zeroconf import IPVersion, ServiceInfo, Zeroconf
    addrs = lan_addresses() if bind in ("0.0.0.0", "::") else [bind]
    if not addrs:
        log.warning("no LAN address found: not advertising by mDNS")
        return None
    kind = SERVICE_TYPES[scheme]
    info = ServiceInfo(kind, f"{SERVICE_NAME}.{kind}", port=int(port),
                       properties={"path": "/pair"}, server=f"{socket.gethostname()}.local.",
                       addresses=[socket.inet_aton(a) for a in addrs])
    zc = Zeroconf(interfaces=addrs, ip_version=IPVersion.V4Only)
    zc.register_service(info, allow_name_change=True)
    log.info("advertised %r on %s port %d", SERVICE_NAME, ", ".join(addrs), port)
    return zc


def provisioned_secret(cfg: Any) -> Path | None:
    """companion.secret_file; a config written before that key named the secret by its place
    next to the config (<etc>/secrets/companion_secret)."""
    if cfg.companion.secret_file is not None:
        return Path(cfg.companion.secret_file)
    if cfg.source is None:
        return None
    path = Path(cfg.source).parent / SECRET_FILE
    return path if path.is_file() else None


def _watchdog(stop: threading.Event) -> None:
    from vrm_io.notify import notify
    notify("READY=1")
    while not stop.wait(WATCHDOG_S):
        notify("WATCHDOG=1")
    notify("STOPPING=1")


def cmd_companion(args: argparse.Namespace) -> int:
    from companion_app import create_app
    from companion_app.box import Box
    from companion_app.serve import Tls, bound_port, make_server, redirect_app, serve_in_thread
    from device.config import ConfigError, read_secret_file
    from device.files import read_limited
    try:
        cfg = _config(args)
    except EXPECTED as exc:
        return _fail(args, str(exc), EXIT_CONFIG)
    c = cfg.companion
    bind = args.bind or c.bind
    port = c.port if args.port is None else args.port
    tls = Tls(c.cert_file, c.key_file) if c.cert_file is not None and c.key_file is not None else None
    hosts = [bind] + (lan_addresses() if bind in ("0.0.0.0", "::") else [])
    conf: dict[str, Any] = {"BOX": Box(cfg.control.socket), "DATA_DIR": cfg.data_dir,
                            "ALLOWED_HOSTS": hosts, "HTTPS": tls is not None}
    provisioned = provisioned_secret(cfg)
    try:
        if provisioned is not None:     # the companion's user may not write the data dir: read it
            secret = read_secret_file("companion.secret_file", provisioned)
            if len(secret) < 32:
                return _fail(args, f"config key 'companion.secret_file' = '{provisioned}': holds fewer "
                                   "than 32 characters (sudo vrmbox provision --rotate makes a new one)",
                             EXIT_CONFIG)
            conf["SECRET_KEY"] = secret.encode()
        if tls is not None:             # its key: read by this process, now, as for every secret
            read_secret_file("companion.key_file", tls.key_file)
        ca_pem = read_limited(c.ca_file, 1024 * 1024) if tls is not None and c.ca_file is not None else None
    except ConfigError as exc:
        return _fail(args, str(exc), EXIT_CONFIG)
    except OSError as exc:
        return _fail(args, f"config key 'companion.ca_file' = '{c.ca_file}': cannot be read ({exc.strerror})",
                     EXIT_CONFIG)
    app = create_app(conf)
    servers = []
    try:
        server = make_server(app, bind, port, tls)
        servers.append(server)
        port = bound_port(server)
        if tls is not None and c.redirect_port and args.port is None:
            servers.append(make_server(redirect_app(port, ca_pem), bind, c.redirect_port, threads=2))
    except OSError as exc:
        for s_ in servers:
            s_.stop()
        return _fail(args, f"cannot listen on {bind}:{port}: {exc}")
    scheme = "https" if tls is not None else "http"
    zc = None
    if not (is_loopback(bind) or args.no_mdns):
        try:
            zc = advertise(bind, port, scheme)
        except (OSError, ValueError, TypeError) as exc:   # the app works without mDNS
            log.warning("not advertising by mDNS: %s", exc)
    log.info("companion app on %s://%s:%s/", scheme, bind, port)
    print(f"LISTENING {bind}:{port}" + (f" {scheme}" if tls is not None else ""), flush=True)
    print("READY", flush=True)
    stop = threading.Event()
    if os.environ.get("NOTIFY_SOCKET"):     # systemd Type=notify with WatchdogSec (provisioning)
        threading.Thread(target=_watchdog, args=(stop,), daemon=True).start()
    for extra in servers[1:]:
        serve_in_thread(extra)
    import signal
    def on_term(*_: Any) -> None:
        app.extensions["vrmbox_stopping"].set()        # streams end first: stop() waits for them
        threading.Thread(target=server.stop, daemon=True).start()
    signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        app.extensions["vrmbox_stopping"].set()
        if zc is not None:
            zc.unregister_all_services()
            zc.close()
        for s_ in servers:
            s_.stop()
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    try:
        result = _operate(args, "pair_code", {})
    except EXPECTED as exc:
        return _fail(args, str(exc))
    if args.json:
        print(json.dumps({"code": result["code"], "expires_at": result["expires_at"]}))
    else:
        print(f"pairing code: {result['display']}  (valid 5 minutes, once)")
    return 0


def cmd_phones(args: argparse.Namespace) -> int:
    try:
        if args.action == "unpair":
            if not args.phone:
                return _fail(args, "which phone? vrmbox phones unpair PHONE_ID")
            result: Any = _operate(args, "phone_unpair", {"phone": args.phone})
            text = f"unpaired {args.phone}"
        else:
            result = _operate(args, "phones", {})
            text = "\n".join(f"{p['phone']}  {p['name']}" for p in result) or "no paired phones"
    except EXPECTED as exc:
        return _fail(args, str(exc))
    print(json.dumps(result) if args.json else printable(text))
    return 0


def register(subparsers: Any) -> None:
    from device.cli.common import common as common_options
    common = common_options()
    p = subparsers.add_parser("companion", parents=[common], help="serve the phone companion app")
    p.add_argument("--bind", default=None, help="address to listen on (default: companion.bind, 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default: companion.port, 8080; 0: any)")
    p.add_argument("--no-mdns", action="store_true", help="do not advertise on the LAN")
    p.set_defaults(func=cmd_companion)
    p = subparsers.add_parser("pair", parents=[common], help="show a one-time code to pair a phone")
    p.set_defaults(func=cmd_pair)
    p = subparsers.add_parser("phones", parents=[common], help="list paired phones, or unpair one")
    p.add_argument("action", nargs="?", choices=["list", "unpair"], default="list")
    p.add_argument("phone", nargs="?", help="phone id (for unpair)")
    p.set_defaults(func=cmd_phones)
