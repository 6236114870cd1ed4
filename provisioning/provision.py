"""First boot: from a fresh card to a box with its own keys, secrets, certificates and broker.

`provision()` plans every file (what, where, mode, owning account) and then writes what is
missing. It is idempotent: a second run finds everything present and changes nothing. It never
overwrites a key or a secret; with `rotate` it re-issues the rotatable ones (the box's broker
password, the companion secret, the server and companion certificates) and audits that in the
store. Everything is checked before anything is written, so bad input loses nothing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
import socket
import ssl
import stat
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from device import keystore
from provisioning import accounts, mosquitto, pki
from device.config.render import config_toml, set_key
from provisioning.layout import Layout, layout_for
from vrm_protocol.errors import ProtocolError
from vrm_protocol.messages import check_slug

log = logging.getLogger(__name__)

HOME_BROKER_PORT = 8883
HOME_BROKER_BIND = "0.0.0.0"
COMPANION_HTTPS_PORT = 8443          # the phone app; 8080 (plain) only redirects and hands out the CA
COMPANION_REDIRECT_PORT = 8080
AUDIT_ROTATED = "provision_rotated"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ProvisionError(Exception):
    """Input or existing state provisioning refuses; the message names the thing and the fix."""


@dataclass(frozen=True)
class Market:
    """A market broker the person supplies (vrmbox provision --market ...)."""

    url: str
    ca_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class Options:
    root: Path | None = None
    dry_run: bool = False
    rotate: bool = False
    market: Market | None = None
    check_market: bool = True
    broker_port: int = HOME_BROKER_PORT
    broker_bind: str = HOME_BROKER_BIND
    names: tuple[str, ...] = ()          # extra names for the server certificate
    board: str | None = None             # ui.profile: the board the box's face drives


@dataclass
class Report:
    layout: Layout
    created: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    rotated: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.rotated)


# ------------------------------------------------------------------------------ checks (pure)
def check_market(m: Market) -> None:
    """Refuse a market broker the box must not use: plain MQTT to another host, credentials
    half given, files missing. One message, naming the thing and the fix."""
    try:
        parts = urlsplit(m.url)
        parts.port
    except ValueError as exc:
        raise ProvisionError(f"--market {m.url!r}: not a URL ({exc}); use mqtts://host:8883") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ProvisionError(f"--market {m.url!r}: use mqtts://host[:port]")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise ProvisionError(f"--market {m.url!r}: only scheme://host[:port]; give credentials with "
                             "--market-username and --market-password-file")
    if parts.scheme == "mqtt" and parts.hostname not in LOOPBACK_HOSTS:
        raise ProvisionError(f"--market {m.url!r}: plain MQTT to {parts.hostname} would send the "
                             "box's credentials and messages unencrypted; use mqtts://")
    if (m.username is None) != (m.password_file is None):
        raise ProvisionError("--market-username and --market-password-file go together")
    if m.ca_file is not None:
        if parts.scheme != "mqtts":
            raise ProvisionError("--market-ca needs an mqtts:// --market URL")
        try:
            pki.check_ca_file(Path(m.ca_file).read_bytes(), f"--market-ca {m.ca_file}")
        except OSError as exc:
            raise ProvisionError(f"--market-ca {m.ca_file}: cannot be read ({exc.strerror})") from None
        except pki.CertificateError as exc:
            raise ProvisionError(f"{exc}; give the market operator's CA certificate (PEM)") from None
    if m.password_file is not None:
        _read_secret(Path(m.password_file), "--market-password-file")


def _read_secret(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"{what} {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if not text or "\n" in text:
        raise ProvisionError(f"{what} {path}: must hold the password on one line")
    return text


def try_market(m: Market, timeout: float = 10.0) -> None:
    """Connect once with the given CA and credentials; ProvisionError when refused/unreachable."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parts = urlsplit(m.url)
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    done = threading.Event()
    result: dict[str, object] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vrmbox-check-{secrets.token_hex(4)}",
                    protocol=mqtt.MQTTv5)
    if tls:
        c.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if m.username:
        c.username_pw_set(m.username, _read_secret(Path(m.password_file), "--market-password-file"))  # type: ignore[arg-type]

    def on_connect(_c, _u, _f, rc, _p):  # noqa: ANN001
        result["rc"] = rc
        done.set()
    c.on_connect = on_connect
    try:
        c.connect(parts.hostname, port, keepalive=10)   # type: ignore[arg-type]
    except (OSError, ssl.SSLError) as exc:
        raise ProvisionError(f"market broker {m.url}: cannot connect ({exc}); check the URL and "
                             "--market-ca, or skip this check with --no-market-check") from None
    c.loop_start()
    try:
        if not done.wait(timeout):
            raise ProvisionError(f"market broker {m.url}: no answer within {timeout:.0f} s; check "
                                 "the URL, or skip this check with --no-market-check")
    finally:
        c.disconnect()
        c.loop_stop()
    rc = result["rc"]
    if getattr(rc, "is_failure", False):
        raise ProvisionError(f"market broker {m.url} refused the box ({rc}); check "
                             "--market-username and --market-password-file with the operator")


def lan_ip() -> str | None:
    """The address this machine uses on its LAN (no packet is sent: UDP connect only routes)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            ip = s.getsockname()[0]
            return None if ip.startswith("127.") else ip
    except OSError:
        return None


def server_names(extra: tuple[str, ...]) -> list[str]:
    """Names in the broker's (and companion's) certificate: hostname, vrmbox.local, LAN IP, loopback."""
    host = socket.gethostname()
    names = [host, f"{host}.local", pki.MDNS_NAME, "localhost", "127.0.0.1", *extra]
    ip = lan_ip()
    if ip:
        names.append(ip)
    return [n for n in dict.fromkeys(names) if n]


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Item:
    """One file provisioning owns: how to make it, who may read it."""

    path: Path
    make: Callable[[], bytes]
    mode: int
    owner: str | None = None       # account that owns it (root keeps it when None) ...
    group: str | None = None       # ... or whose group may read it
    secret: bool = False           # never overwritten, except rotatable ones under --rotate
    rotatable: bool = False


class _Lazy:
    """Generate each secret once per run, only if it is needed."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn, self.value = fn, None

    def __call__(self) -> object:
        if self.value is None:
            self.value = self.fn()
        return self.value


def _existing(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def provision(opts: Options, env: Mapping[str, str] = os.environ, euid: int | None = None,
              now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> Report:
    euid = os.geteuid() if euid is None else euid
    lay = layout_for(opts.root, euid, env)
    report = Report(lay)
    if opts.market is not None:
        check_market(opts.market)
    if not 1 <= opts.broker_port <= 65535:
        raise ProvisionError(f"--broker-port {opts.broker_port}: must be 1..65535")
    system = lay.system and euid == 0
    broker_user = accounts.broker_user()

    # --- TLS material: the CA is kept (it is the trust anchor); leaves follow the CA.
    ca_pem, ca_key = _existing(lay.pem("ca")), _existing(lay.key("ca"))
    if (ca_pem is None) != (ca_key is None):
        missing = lay.key("ca") if ca_key is None else lay.pem("ca")
        raise ProvisionError(f"{missing} is missing while its pair exists; restore it, or move "
                             f"{lay.tls} away to make a new CA (clients must then trust the new ca.pem)")
    ca = pki.KeyPair(ca_pem, ca_key) if ca_pem and ca_key else pki.make_ca("vrmbox local CA", now())
    leaves: dict[str, pki.KeyPair] = {}
    for name in ("server", "companion"):
        cert, key = _existing(lay.pem(name)), _existing(lay.key(name))
        if cert is not None and key is not None and not opts.rotate:
            try:
                pki.check_pair(ca.cert_pem, cert, key, f"{lay.pem(name)}")
            except pki.CertificateError as exc:
                raise ProvisionError(f"{exc}; re-issue it with `vrmbox provision --rotate`") from None
            leaves[name] = pki.KeyPair(cert, key)
        elif (cert is None) != (key is None) and not opts.rotate:
            raise ProvisionError(f"{lay.pem(name) if cert is None else lay.key(name)} is missing "
                                 "while its pair exists; re-issue both with `vrmbox provision --rotate`")
    names = server_names(opts.names)
    leaf = {n: _Lazy(lambda: pki.issue_server(ca, names, now())) for n in ("server", "companion")}

    def leaf_pair(n: str) -> pki.KeyPair:
        return leaves.get(n) or leaf[n]()  # type: ignore[return-value]

    # --- the box's broker account
    old_user = _existing(lay.box_username)
    box_user = old_user.decode().strip() if old_user else f"box@{secrets.token_hex(6)}"
    box_pw = _Lazy(mosquitto.new_password)
    old_pw = _existing(lay.box_password)

    def box_password() -> str:
        if old_pw is not None and not opts.rotate:
            return old_pw.decode().strip()
        return box_pw()  # type: ignore[return-value]

    # --- market: its CA and password are the person's; an existing one is never replaced silently
    market_ca = market_pw = None
    if opts.market is not None:
        if opts.market.ca_file is not None:
            market_ca = Path(opts.market.ca_file).read_bytes()
        if opts.market.password_file is not None:
            market_pw = (_read_secret(Path(opts.market.password_file), "--market-password-file") + "\n").encode()
            old = _existing(lay.market_password)
            if old is not None and old != market_pw and not opts.rotate:
                raise ProvisionError(f"{lay.market_password} already holds another market password; "
                                     "rerun with --rotate to replace it")

    home_url = f"mqtts://127.0.0.1:{opts.broker_port}"
    home = {"url": home_url, "ca_file": lay.pem("ca"), "username": box_user,
            "password_file": lay.box_password}
    conf_values, header = _config_values(opts, lay, home, report)

    broker_conf = mosquitto.mosquitto_conf(
        port=opts.broker_port, bind=opts.broker_bind, data_dir=lay.broker_data, user=broker_user,
        password_file=lay.passwd, acl_file=lay.acl,
        tls={"cafile": lay.pem("ca"), "certfile": lay.pem("server"), "keyfile": lay.key("server")})

    def passwd() -> bytes:
        text = (_existing(lay.passwd) or b"").decode()
        if box_user in mosquitto.passwd_users(text) and not (opts.rotate or old_pw is None):
            return text.encode()
        return mosquitto.with_entry(text, mosquitto.hash_entry(box_user, box_password(), _tmpdir())).encode()

    def vendor_accounts() -> list[str]:
        return [u for u in mosquitto.passwd_users((_existing(lay.passwd) or b"").decode()) if u != box_user]

    def _tmpdir() -> Path:
        return lay.broker if lay.broker.is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))

    B, C, M = accounts.BOX_USER, accounts.COMPANION_USER, accounts.BROKER_USER
    items = [
        Item(lay.pem("ca"), lambda: ca.cert_pem, 0o644, secret=True),
        Item(lay.key("ca"), lambda: ca.key_pem, 0o600, secret=True),
        Item(lay.pem("server"), lambda: leaf_pair("server").cert_pem, 0o644, secret=True, rotatable=True),
        Item(lay.key("server"), lambda: leaf_pair("server").key_pem, 0o640, group=M, secret=True,
             rotatable=True),
        Item(lay.pem("companion"), lambda: leaf_pair("companion").cert_pem, 0o644, secret=True,
             rotatable=True),
        Item(lay.key("companion"), lambda: leaf_pair("companion").key_pem, 0o600, owner=C, secret=True,
             rotatable=True),
        Item(lay.companion_fingerprint, lambda: (pki.fingerprint(leaf_pair("companion").cert_pem) + "\n").encode(),
             0o644),
        Item(lay.box_username, lambda: (box_user + "\n").encode(), 0o644, secret=True),
        Item(lay.box_password, lambda: (box_password() + "\n").encode(), 0o600, owner=B, secret=True,
             rotatable=True),
        Item(lay.companion_secret, lambda: (secrets.token_urlsafe(32) + "\n").encode(), 0o600, owner=C,
             secret=True, rotatable=True),
        Item(lay.passwd, passwd, 0o640, group=M),
        Item(lay.acl, lambda: mosquitto.acl_text(box_user, vendor_accounts()).encode(), 0o640, group=M),
        Item(lay.broker_conf, lambda: broker_conf.encode(), 0o640, group=M),
    ]
    if market_ca is not None:
        items.append(Item(lay.market_ca, lambda: market_ca, 0o644))
    if market_pw is not None:
        items.append(Item(lay.market_password, lambda: market_pw, 0o600, owner=B, secret=True,
                          rotatable=True))
    conf_item = Item(lay.config, lambda: config_toml(conf_values, header).encode(), 0o644)

    dirs = [(lay.etc, 0o755, None, None), (lay.secrets, 0o711, None, None), (lay.tls, 0o755, None, None),
            (lay.broker, 0o750, None, M), (lay.broker_data, 0o700, M, None)]

    writes = _decide(items, conf_item, opts, lay, report, conf_values)
    if opts.dry_run:
        return report
    _apply(writes, conf_item, dirs, lay, system, broker_user, opts, report)
    return report


def add_vendor(lay: Layout, slug: str, rotate: bool = False) -> str:
    """Issue (or with rotate, re-issue) a vendor account on the home broker: its hashed entry
    in the password file and its block in the ACL. Returns the password, which is not stored."""
    try:
        check_slug(slug, "vendor")
    except ProtocolError:
        raise ProvisionError(f"vendor {slug!r}: the account name is the vendor's slug, "
                             "[a-z0-9][a-z0-9._-]{0,62}") from None
    try:
        text = lay.passwd.read_text()
        box_user = lay.box_username.read_text().strip()
    except FileNotFoundError as exc:
        raise ProvisionError(f"{exc.filename} not found: run `vrmbox provision` first") from None
    users = mosquitto.passwd_users(text)
    if slug in users and not rotate:
        raise ProvisionError(f"vendor account {slug!r} exists in {lay.passwd}; --rotate issues a "
                             "new password")
    password = mosquitto.new_password()
    text = mosquitto.with_entry(text, mosquitto.hash_entry(slug, password, lay.broker))
    _replace_keeping_owner(lay.passwd, text.encode())
    acl = mosquitto.acl_text(box_user, [u for u in mosquitto.passwd_users(text) if u != box_user])
    _replace_keeping_owner(lay.acl, acl.encode())
    return password


def _replace_keeping_owner(path: Path, data: bytes) -> None:
    st = path.stat()
    _write(path, data, stat.S_IMODE(st.st_mode))
    if os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid)


def _store_exists(lay: Layout) -> bool:
    return all((lay.data / keystore.KEYS_DIR / f).exists()
               for f in (keystore.DATA_KEY_FILE, keystore.DEVICE_KEY_FILE))


def _decide(items: list[Item], conf_item: Item, opts: Options, lay: Layout,
            report: Report, conf_values: Mapping[str, object]) -> list[tuple[Item, bytes, str]]:
    """Which files to write (reading only what exists); each is recorded in report."""
    writes: list[tuple[Item, bytes, str]] = []
    for item in items:
        old = _existing(item.path)
        if old is not None and item.secret and not (opts.rotate and item.rotatable):
            report.kept.append(item.path)
            continue
        new = item.make()
        if old == new:
            report.kept.append(item.path)
            continue
        kind = "created" if old is None else ("rotated" if item.secret else "updated")
        writes.append((item, new, kind))
    old_conf = _existing(lay.config)
    new_conf = conf_item.make()
    if old_conf is None:
        writes.append((conf_item, new_conf, "created"))
    elif old_conf != new_conf and opts.market is not None:
        writes.append((conf_item, new_conf, "updated"))
        report.notes.append(f"{lay.config}: rewritten for the market broker; the previous file is "
                            f"{lay.config.name}.bak")
    else:
        text, changes = _upgraded_config(old_conf.decode(), conf_values, opts.board)
        if changes:
            writes.append((conf_item, text.encode(), "updated"))
            report.notes.append(f"{lay.config}: {'; '.join(changes)}; everything else kept as it was; "
                                f"the previous file is {lay.config.name}.bak")
        else:
            report.kept.append(lay.config)
            if old_conf != new_conf:
                report.notes.append(f"{lay.config} was edited since provisioning; kept as it is")
    for item, _new, kind in writes:
        getattr(report, kind).append(item.path)
    if not _store_exists(lay):
        report.created.append(lay.data / keystore.KEYS_DIR)
    else:
        report.kept.append(lay.data / keystore.KEYS_DIR)
    return writes


def _upgraded_config(text: str, conf_values: Mapping[str, object], board: str | None) -> tuple[str, list[str]]:
    """An existing config.toml with the board set and the keys provisioning manages that it lacks
    (new in this version, e.g. the phone app's certificate) added; the person's edits stay."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return text, []                      # not ours to repair: `vrmbox config check` says why

    def has(dotted: str) -> bool:
        section, _, key = dotted.rpartition(".")
        table = data.get(section, {}) if section else data
        return isinstance(table, dict) and key in table
    changes = []
    if board is not None and data.get("ui", {}).get("profile") != board:
        text = set_key(text, "ui.profile", board)
        changes.append(f"ui.profile set to {board}")
    added = [k for k in conf_values if not has(k) and k != "ui.profile"]    # the board: above
    for k in added:
        text = set_key(text, k, conf_values[k])
    if added:
        changes.append(f"added {', '.join(added)} (new in this version)")
    return text, changes


def _apply(writes: list[tuple[Item, bytes, str]], conf_item: Item, dirs: list, lay: Layout,
           system: bool, broker_user: str, opts: Options, report: Report) -> None:
    """Write what _decide chose, hand files to their accounts, create the store, audit a rotation."""
    old_conf = _existing(lay.config)
    store_exists = _store_exists(lay)
    for d, mode, owner, group in dirs:
        _mkdir(d, mode, owner, group, system)
    for item, new, kind in writes:
        if item is conf_item and kind == "updated":
            _write(item.path.with_name(item.path.name + ".bak"), old_conf or b"", 0o644)
        _write(item.path, new, item.mode)
        _own(item, system)
    if not store_exists:
        _open_store(lay, system)
    for target in (lay.broker_conf, lay.broker_data / "x"):
        blocked = accounts.blocked_dir(target, broker_user)
        if blocked is not None:
            report.notes.append(f"Mosquitto runs as {broker_user!r}, which cannot enter {blocked}; "
                                f"it will not start from {lay.broker_conf} until it can (chmod o+x)")
            break
    if opts.rotate and report.rotated:
        from device.store import Store
        with Store.open(lay.data) as store:
            store.record_event(AUDIT_ROTATED, {"files": sorted(p.name for p in report.rotated)})
        report.notes.append("rotation recorded in the audit log; restart the broker and the box's "
                            "services so they use the new secrets")


def _config_values(opts: Options, lay: Layout, home: Mapping[str, object],
                   report: Report) -> tuple[dict[str, object], str]:
    """What config.toml says beyond the declared defaults (device/config/keys.py), and its
    header comment."""
    conf_values: dict[str, object] = {"data_dir": lay.data}
    if opts.market is not None:
        conf_values["broker.url"] = opts.market.url
        if opts.market.ca_file is not None:
            conf_values["broker.ca_file"] = lay.market_ca
        if opts.market.username:
            conf_values["broker.username"] = opts.market.username
            conf_values["broker.password_file"] = lay.market_password
    else:
        conf_values.update({f"broker.{k}": v for k, v in home.items()})
    conf_values.update({f"home_broker.{k}": v for k, v in home.items()})   # local topics
    conf_values["control.socket"] = lay.control_socket
    conf_values["control.button_socket"] = lay.button_socket
    conf_values["companion.secret_file"] = lay.companion_secret
    conf_values.update({"companion.cert_file": lay.pem("companion"), "companion.key_file": lay.key("companion"),
                        "companion.ca_file": lay.pem("ca"), "companion.port": COMPANION_HTTPS_PORT,
                        "companion.redirect_port": COMPANION_REDIRECT_PORT})
    if opts.board is not None:
        conf_values["ui.profile"] = opts.board
    if lay.system:
        users = (*accounts.CONTROL_USERS, *accounts.BUTTON_USERS)
        if all(accounts.exists(u) for u in users):
            conf_values["control.control_users"] = list(accounts.CONTROL_USERS)
            conf_values["control.button_users"] = list(accounts.BUTTON_USERS)
        else:
            report.notes.append(f"control.control_users, control.button_users not written: no account {', '.join(users)} here "
                                "(install.sh creates them); the daemon runs as a single-user setup")
    header = ("VRM box configuration, written by `vrmbox provision`. Every setting is here;\n"
              "values not set by provisioning are the built-in defaults. Check edits with\n"
              "`vrmbox config check`. Reference: docs/config.md, docs/provisioning.md.")
    return conf_values, header


def _mkdir(d: Path, mode: int, owner: str | None, group: str | None, system: bool) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(d.stat().st_mode) != mode:
        d.chmod(mode)
    if system:
        accounts.hand_to(d, owner or group, owner=owner is not None)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, never briefly readable by more than `mode` allows (keystore's writer: 0600
    temp file, fsync, rename), then widened to mode where it is public."""
    keystore.write_private_file(path, data)
    if mode != 0o600:
        os.chmod(path, mode)


def _own(item: Item, system: bool) -> None:
    if system:
        accounts.hand_to(item.path, item.owner or item.group, owner=item.owner is not None)


def _open_store(lay: Layout, system: bool) -> None:
    """Device key and data key: Store.open creates them (keys/, 0700) on first use only."""
    from device.store import Store
    Store.open(lay.data).close()
    if system and accounts.exists(accounts.BOX_USER):
        for p in [lay.data, *lay.data.rglob("*")]:
            accounts.hand_to(p, accounts.BOX_USER, owner=True)


def digest(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of each file (for `--dry-run` comparisons and tests)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}
