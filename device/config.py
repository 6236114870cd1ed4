"""The box daemon's configuration: one TOML file, validated completely at start.

Why strict: a typo in a key or a wrong value should stop the box with a message naming the key
and the value (`config key 'broker.url' = 'htp://x': scheme must be mqtt or mqtts`), never be
ignored. Precedence, lowest first: built-in defaults, the file, $VRMBOX_DATA_DIR (data_dir only,
as in docs/store.md), then `overrides` (dotted keys, e.g. from the command line).
There are no default passwords; a broker password comes from `broker.password_file` (read here,
a warning is logged when its permissions are looser than 0600) or, discouraged, inline.
docs/config.md lists every key; config/vrmbox.example.toml shows them all.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from vrm_protocol.messages import SLUG_RE

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "config.toml"
SYSTEM_CONFIG = Path("/etc/vrmbox") / CONFIG_FILE_NAME
ENV_CONFIG = "VRMBOX_CONFIG"
ENV_DATA_DIR = "VRMBOX_DATA_DIR"
DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
DEFAULT_TERMS_ID = "vrm-basic-1"
DEFAULT_TERMS_TEXT = "No tracking. No resale. Delete my data 30 days after the agreement ends."
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_PRESETS = 32
MAX_ATTRS = 50
MAX_STR = 2000
CONTROL_SOCKET_NAME = "control.sock"
BUTTON_SOCKET_NAME = "button.sock"
MAX_SOCKET_PATH = 107            # sun_path is 108 bytes including the NUL
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_SECRET_KEYS = frozenset({"broker.password"})


class ConfigError(ValueError):
    """A configuration the box refuses; the message names the key and the value."""

    def __init__(self, key: str | None, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        if key is None:
            super().__init__(f"config file '{value}': {reason}")
        else:
            shown = "'***'" if key in _SECRET_KEYS and value is not None else _show(value)
            super().__init__(f"config key '{key}' = {shown}: {reason}")


def _show(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# ------------------------------------------------------------------------------ the sections
@dataclass(frozen=True)
class BrokerConfig:
    url: str = DEFAULT_BROKER_URL
    host: str = "127.0.0.1"                 # from url
    port: int = 1883                        # from url (default 1883 mqtt, 8883 mqtts)
    tls: bool = False                       # from url: mqtts
    username: str | None = None
    password: str | None = field(default=None, repr=False)   # from password_file when set
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = None            # None: a random secret one kept in the store
    keepalive: int = 30
    session_expiry: int = 7 * 86400
    reconnect_min: int = 1
    reconnect_max: int = 60



@dataclass(frozen=True)
class IntakeConfig:
    max_queue: int = 1000
    per_vendor_per_minute: int = 60
    per_vendor_burst: int = 20
    max_message_bytes: int = 65536
    max_offers_per_vendor_intent: int = 20
    max_vendors: int = 2000                 # pinned vendors at most; new slugs past it are refused
    verify_workers: int | str = "auto"      # signature-check processes: "auto" = one per CPU; 0/1 = none
    receive_maximum: int = 2000             # MQTT ReceiveMaximum: unacked messages the broker may send us
    max_pending_bytes: int = 16 * 1024 * 1024   # payload bytes at most waiting in the fair lanes


@dataclass(frozen=True)
class IntentsConfig:
    default_ttl_s: int = 7 * 86400
    terms_id: str = DEFAULT_TERMS_ID
    terms_text: str = DEFAULT_TERMS_TEXT
    terms_uri: str | None = None
    republish_window_s: int = 60     # after a reconnect, each live intent again at its own random time


@dataclass(frozen=True)
class AgreementsConfig:
    countersign_timeout_s: int = 300
    default_duration_days: int = 30
    companion_only_confirmation: bool = False
    default_purpose: str = "fulfil the offer"
    default_fields: tuple[str, ...] = ("email",)   # what "accept" on the box shares


@dataclass(frozen=True)
class ControlConfig:
    """The local sockets and who may open each (docs/architecture.md, device/daemon/access.py).
    No allow-list at all: the single-user development setup."""

    socket: Path
    button_socket: Path | None = None        # None: button.sock next to the control socket
    control_users: tuple[str, ...] = ()
    control_groups: tuple[str, ...] = ()
    button_users: tuple[str, ...] = ()
    button_groups: tuple[str, ...] = ()

    @property
    def button(self) -> Path:
        return self.button_socket or Path(self.socket).with_name(BUTTON_SOCKET_NAME)


@dataclass(frozen=True)
class UiConfig:
    profile: str | None = None     # the board (hardware/profiles/NAME.toml or a path); None: the default


@dataclass(frozen=True)
class Preset:
    """An intent a button can cast: what is shown (name) and what is published."""

    name: str
    category: str
    description: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class Config:
    broker: BrokerConfig
    data_dir: Path
    intake: IntakeConfig
    intents: IntentsConfig
    agreements: AgreementsConfig
    control: ControlConfig
    presets: tuple[Preset, ...] = ()
    home_broker: BrokerConfig | None = None  # the box's own LAN broker; None: no local topics
    ui: UiConfig = UiConfig()
    log_level: str = "INFO"
    source: Path | None = None              # the file read, None for defaults only


# ------------------------------------------------------------------------------ value checks
Check = Callable[[Any, str], Any]


def _int(lo: int, hi: int) -> Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, "must be an integer")
        if not lo <= value <= hi:
            raise ConfigError(key, value, f"must be between {lo} and {hi}")
        return value
    check.kind = "int"  # type: ignore[attr-defined]
    return check


def _workers(value: Any, key: str) -> int | str:
    """`intake.verify_workers`: "auto" or a number of processes."""
    if value == "auto":
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise ConfigError(key, value, 'must be "auto" or a number of processes, 0..64')
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "must be true or false")
    return value


_bool.kind = "bool"  # type: ignore[attr-defined]


def _str(max_len: int = MAX_STR, optional: bool = False) -> Check:
    def check(value: Any, key: str) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise ConfigError(key, value, "must be a string")
        if not value or len(value) > max_len:
            raise ConfigError(key, value, f"must be 1..{max_len} characters")
        return value
    return check


def _path(optional: bool = True) -> Check:
    def check(value: Any, key: str) -> Path | None:
        if value is None and optional:
            return None
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value or "\0" in value:
            raise ConfigError(key, value, "must be a path")
        return Path(value)
    check.kind = "path"  # type: ignore[attr-defined]
    return check


def _url(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, value, "must be a string such as mqtt://127.0.0.1:1883")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(key, value, f"not a valid URL ({exc})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(key, value, "scheme must be mqtt or mqtts")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(key, value, "must not hold credentials; use broker.username and "
                                      "broker.password_file")
    if not parts.hostname:
        raise ConfigError(key, value, "must name a host, e.g. mqtts://broker.example:8883")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(key, value, "must be scheme://host[:port] only")
    if port == 0:
        raise ConfigError(key, value, "port must be 1..65535")
    return value


def _slug(value: Any, key: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise ConfigError(key, value, "must be a lower-case slug ([a-z0-9._-], at most 63)")
    return value


def _client_id(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CLIENT_ID_RE.match(value):
        raise ConfigError(key, value, "must be 1..64 characters of [A-Za-z0-9._-]")
    return value


def _names(max_items: int = 32) -> Check:
    """A list of user/group names or numeric ids (resolved when the daemon starts)."""
    def check(value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or len(value) > max_items:
            raise ConfigError(key, value, f"must be a list of at most {max_items} names")
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (str, int)) or not re.fullmatch(
                    r"[a-z_][a-z0-9_.-]{0,31}\$?|\d{1,10}", str(v)):
                raise ConfigError(key, v, "must be a user/group name or a numeric id")
            out.append(str(v))
        return tuple(out)
    check.kind = "list"  # type: ignore[attr-defined]
    return check


def _fields(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 32 or not all(
            isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) for v in value):
        raise ConfigError(key, value, "must be a list of profile field names")
    return tuple(value)


_fields.kind = "list"  # type: ignore[attr-defined]


def _level(value: Any, key: str) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ConfigError(key, value, f"must be one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _scalar_ok(v: Any) -> bool:
    if isinstance(v, str):
        return len(v) <= MAX_STR
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, (bool, int))


def _presets(value: Any, key: str) -> tuple[Preset, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, value, "must be a list of tables ([[presets]])")
    if len(value) > MAX_PRESETS:
        raise ConfigError(key, f"{len(value)} presets", f"must have at most {MAX_PRESETS} entries")
    out: list[Preset] = []
    for i, p in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(p, Mapping):
            raise ConfigError(where, p, "must be a table with name, category, description, attributes")
        for k in p:
            if k not in ("name", "category", "description", "attributes"):
                raise ConfigError(f"{where}.{k}", p[k], "unknown key")
        for k in ("name", "category"):
            if k not in p:
                raise ConfigError(f"{where}.{k}", None, "is required")
        name = _str(64)(p["name"], f"{where}.name")
        if any(q.name == name for q in out):
            raise ConfigError(f"{where}.name", name, "is used by another preset")
        category = _slug(p["category"], f"{where}.category")
        description = _str(MAX_STR, optional=True)(p.get("description"), f"{where}.description")
        attrs = p.get("attributes", {})
        if not isinstance(attrs, Mapping) or len(attrs) > MAX_ATTRS:
            raise ConfigError(f"{where}.attributes", attrs, f"must be a table of at most {MAX_ATTRS} keys")
        for k, v in attrs.items():
            ok = (all(_scalar_ok(x) for x in v) and len(v) <= 100) if isinstance(v, list) else _scalar_ok(v)
            if len(k) > 64 or not ok:
                raise ConfigError(f"{where}.attributes.{k}", v,
                                  "must be a string, number, boolean or a list of them")
        out.append(Preset(name, category, description, MappingProxyType(dict(attrs))))
    return tuple(out)


_presets.kind = "list"  # type: ignore[attr-defined]

# section -> key -> check; "" holds the top-level keys. The defaults live in the dataclasses.
SCHEMA: dict[str, dict[str, Check]] = {
    "": {"data_dir": _path(optional=False), "log_level": _level, "presets": _presets},
    "broker": {
        "url": _url, "username": _str(256, optional=True), "password": _str(1024, optional=True),
        "password_file": _path(), "ca_file": _path(), "cert_file": _path(), "key_file": _path(),
        "client_id": _client_id, "keepalive": _int(5, 3600),
        "session_expiry": _int(0, 2**32 - 1), "reconnect_min": _int(1, 3600),
        "reconnect_max": _int(1, 86400),
    },
    "intake": {"max_queue": _int(1, 1_000_000), "per_vendor_per_minute": _int(1, 100_000),
               "per_vendor_burst": _int(1, 100_000), "max_message_bytes": _int(1024, 65536),
               "max_offers_per_vendor_intent": _int(1, 10_000), "max_vendors": _int(1, 100_000),
               "verify_workers": _workers, "receive_maximum": _int(10, 65535),
               "max_pending_bytes": _int(65536, 1 << 30)},
    "intents": {"default_ttl_s": _int(60, 366 * 86400), "terms_id": _slug,
                "terms_text": _str(MAX_STR), "terms_uri": _str(MAX_STR, optional=True),
                "republish_window_s": _int(1, 3600)},
    "agreements": {"countersign_timeout_s": _int(10, 86400), "default_duration_days": _int(1, 3650),
                   "default_purpose": _str(200), "default_fields": _fields,
                   "companion_only_confirmation": _bool},
    "home_broker": {},   # filled below: the same keys as [broker]
    "ui": {"profile": _str(400, optional=True)},
    "control": {"socket": _path(), "button_socket": _path(), "control_users": _names(),
                "control_groups": _names(), "button_users": _names(), "button_groups": _names()},
}


SCHEMA["home_broker"] = dict(SCHEMA["broker"])
_SECRET_KEYS = _SECRET_KEYS | {"home_broker.password"}


# ------------------------------------------------------------------------------ loading
def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _expand(p: Path, env: Mapping[str, str]) -> Path:
    text = str(p)
    if text == "~" or text.startswith("~/"):
        return _home(env) / text[2:]
    return p


def user_config_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where a box that is not installed system-wide keeps its config (XDG)."""
    return Path(env.get("XDG_CONFIG_HOME") or _home(env) / ".config") / "vrmbox"


def user_data_home(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("XDG_DATA_HOME") or _home(env) / ".local/share")


def _find_file(path: Path | None, env: Mapping[str, str]) -> Path | None:
    """--config, else $VRMBOX_CONFIG, else /etc/vrmbox/config.toml, else the user's XDG one."""
    if path is not None:
        return Path(path)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    if SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG
    user = user_config_dir(env) / CONFIG_FILE_NAME
    return user if user.is_file() else None


def _read_file(path: Path, env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The file as {section: {key: value}}, unknown keys refused, relative paths made absolute."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(None, path, "not found") from None
    except OSError as exc:
        raise ConfigError(None, path, f"cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(None, path, f"is not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(None, path, "is nested too deeply to be a vrmbox config") from None
    raw: dict[str, dict[str, Any]] = {s: {} for s in SCHEMA}
    base = path.resolve().parent
    for name, value in data.items():
        if name in SCHEMA[""]:
            raw[""][name] = value
        elif name in SCHEMA:
            if not isinstance(value, dict):
                raise ConfigError(name, value, "must be a table")
            for key, v in value.items():
                if key not in SCHEMA[name]:
                    raise ConfigError(f"{name}.{key}", v, "unknown key")
                raw[name][key] = v
        else:
            raise ConfigError(name, value, "unknown key")
    for section, keys in SCHEMA.items():     # paths in the file are relative to the file
        for key, check in keys.items():
            v = raw[section].get(key)
            if getattr(check, "kind", None) == "path" and isinstance(v, str) and v:
                p = _expand(Path(v), env)
                raw[section][key] = str(p if p.is_absolute() else base / p)
    return raw


def _coerce(check: Check, value: Any, key: str) -> Any:
    """Overrides may come from a command line as text: '500' -> 500, 'true' -> True."""
    kind = getattr(check, "kind", None)
    if isinstance(value, str):
        if kind == "int" and re.fullmatch(r"-?\d{1,12}", value.strip()):
            return int(value)
        if kind == "bool" and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    return value


def _apply_overrides(raw: dict[str, dict[str, Any]], overrides: Mapping[str, object]) -> None:
    for dotted, value in overrides.items():
        section, _, key = str(dotted).rpartition(".")
        if not isinstance(dotted, str) or section not in SCHEMA or key not in SCHEMA[section]:
            raise ConfigError(str(dotted), value, "unknown key")
        raw[section][key] = _coerce(SCHEMA[section][key], value, dotted)


def _section(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    return {key: SCHEMA[name][key](raw[key], f"{name}.{key}" if name else key) for key in raw}


def _read_password(path: Path, key: str = "broker.password_file") -> str:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning("broker password file %s has mode %o; it should be 0600 (chmod 600 %s)",
                    path, stat.S_IMODE(st.st_mode), path)
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(key, path, "is empty")
    return password


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _broker(values: dict[str, Any], from_file: Mapping[str, Any], section: str = "broker") -> BrokerConfig:
    b = BrokerConfig(**values)
    parts = urlsplit(b.url)
    tls = parts.scheme == "mqtts"
    b = replace(b, host=parts.hostname or "", port=parts.port or (8883 if tls else 1883), tls=tls)
    if b.password is not None and b.password_file is not None:
        raise ConfigError(f"{section}.password", b.password, "set either password or password_file, not both")
    if b.password_file is not None:
        b = replace(b, password=_read_password(b.password_file, f"{section}.password_file"))
    elif "password" in from_file:
        log.warning("%s.password is written in the config file; prefer %s.password_file (0600)", section, section)
    if b.password is not None and b.username is None:
        raise ConfigError(f"{section}.username", None, "is required when a password is set")
    for key in ("ca_file", "cert_file", "key_file"):
        p = getattr(b, key)
        if p is None:
            continue
        if not tls:
            raise ConfigError(f"{section}.{key}", p, f"needs an mqtts:// {section}.url")
        if not p.is_file():
            raise ConfigError(f"{section}.{key}", p, "file not found")
    if b.key_file is not None and b.cert_file is None:
        raise ConfigError(f"{section}.key_file", b.key_file, f"needs {section}.cert_file")
    if b.reconnect_max < b.reconnect_min:
        raise ConfigError(f"{section}.reconnect_max", b.reconnect_max,
                          f"must be at least {section}.reconnect_min ({b.reconnect_min})")
    if not tls and not _loopback(b.host):
        raise ConfigError(f"{section}.url", b.url, "a broker off this machine needs TLS: use mqtts:// "
                                                   "(and its CA in ca_file), never plain mqtt://")
    return b


def load_config(path: Path | None = None, overrides: Mapping[str, object] | None = None,
                env: Mapping[str, str] = os.environ) -> Config:
    """Defaults < file (path, else $VRMBOX_CONFIG, else /etc/vrmbox/config.toml if it exists)
    < $VRMBOX_DATA_DIR (data_dir) < overrides. Raises ConfigError naming the key and value."""
    source = _find_file(path, env)
    raw: dict[str, dict[str, Any]] = _read_file(source, env) if source else {s: {} for s in SCHEMA}
    from_file = {s: dict(v) for s, v in raw.items()}
    if env.get(ENV_DATA_DIR):
        raw[""]["data_dir"] = env[ENV_DATA_DIR]
    _apply_overrides(raw, overrides or {})

    top = _section("", raw[""])
    data_dir = _expand(top.get("data_dir") or user_data_home(env) / "vrmbox", env)
    brokers: dict[str, BrokerConfig | None] = {}
    for section in ("broker", "home_broker"):
        if section == "home_broker" and not raw[section]:
            brokers[section] = None          # no home broker: the box has no local topics
            continue
        b = _broker(_section(section, raw[section]), from_file[section], section)
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            if getattr(b, key) is not None:
                b = replace(b, **{key: _expand(getattr(b, key), env)})
        brokers[section] = b
    broker = brokers["broker"]
    assert broker is not None
    intake = IntakeConfig(**_section("intake", raw["intake"]))
    if intake.per_vendor_burst > intake.max_queue:
        raise ConfigError("intake.per_vendor_burst", intake.per_vendor_burst,
                          f"must not exceed intake.max_queue ({intake.max_queue})")
    intents = IntentsConfig(**_section("intents", raw["intents"]))
    agreements = AgreementsConfig(**_section("agreements", raw["agreements"]))
    control_values = _section("control", raw["control"])
    sock = control_values.pop("socket", None)
    sock_key = "control.socket" if sock is not None else "control.socket (from data_dir)"
    sock = _expand(sock, env) if sock is not None else data_dir / CONTROL_SOCKET_NAME
    if control_values.get("button_socket") is not None:
        control_values["button_socket"] = _expand(control_values["button_socket"], env)
    control = ControlConfig(sock, **control_values)
    for key, p in ((sock_key, sock), ("control.button_socket", control.button)):
        if len(os.fsencode(str(p))) > MAX_SOCKET_PATH:
            raise ConfigError(key, p, f"is longer than {MAX_SOCKET_PATH} bytes (Unix socket limit)")
    if control.button == control.socket:
        raise ConfigError("control.button_socket", control.button, "must differ from control.socket")
    return Config(broker=broker, data_dir=data_dir, intake=intake, intents=intents,
                  agreements=agreements, control=control,
                  presets=top.get("presets", ()), log_level=top.get("log_level", "INFO"),
                  home_broker=brokers["home_broker"], ui=UiConfig(**_section("ui", raw["ui"])),
                  source=source)
