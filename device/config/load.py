"""Reading the one TOML file into a Config, every key checked as keys.py declares it.

Why strict: a typo in a key or a wrong value should stop the box with a message naming the key
and the value (`config key 'broker.url' = 'htp://x': scheme must be mqtt or mqtts`), never be
ignored. Precedence, lowest first: built-in defaults, the file, $VRMBOX_DATA_DIR (data_dir only,
as in docs/store.md), then `overrides` (dotted keys, e.g. from the command line).

Why a reader: each process of an installed box runs as its own user and checks the files only
of the keys it reads; no process opens a secret at load (secrets.py reads it when it is used).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..files import KIB, FileReadError, read_text_limited
from .checks import ConfigError
from .keys import CLI, KEYS, READERS, RETIRED, SECTIONS, Key
from .model import (AgreementsConfig, BrokerConfig, CompanionConfig, Config, ControlConfig,
                    IntakeConfig, IntentsConfig, UiConfig)

log = logging.getLogger(__name__)

CONFIG_MAX_BYTES = 256 * KIB     # a config is a few KiB; anything near this is not one

CONFIG_FILE_NAME = "config.toml"
SYSTEM_CONFIG = Path("/etc/vrmbox") / CONFIG_FILE_NAME
ENV_CONFIG = "VRMBOX_CONFIG"
ENV_DATA_DIR = "VRMBOX_DATA_DIR"
CONTROL_SOCKET_NAME = "control.sock"
MAX_SOCKET_PATH = 107            # sun_path is 108 bytes including the NUL
CHECK = "check"                  # `vrmbox config check`: the files of every reader


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


def find_file(path: Path | None, env: Mapping[str, str]) -> Path | None:
    """--config, else $VRMBOX_CONFIG, else /etc/vrmbox/config.toml, else the user's XDG one."""
    if path is not None:
        return Path(path)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    if SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG
    user = user_config_dir(env) / CONFIG_FILE_NAME
    return user if user.is_file() else None


def _is_path(k: Key) -> bool:
    return getattr(k.check, "kind", None) == "path"


def _read_file(path: Path, env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The file as {section: {key: value}}, unknown keys refused, relative paths made absolute."""
    try:
        data = tomllib.loads(read_text_limited(path, CONFIG_MAX_BYTES))
    except FileNotFoundError:
        raise ConfigError(None, path, "not found") from None
    except FileReadError as exc:
        raise ConfigError(None, path, str(exc.strerror)) from None
    except OSError as exc:
        raise ConfigError(None, path, f"cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(None, path, f"is not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(None, path, "is nested too deeply to be a vrmbox config") from None
    raw: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    base = path.resolve().parent
    for name, value in data.items():
        if name in SECTIONS[""]:
            raw[""][name] = value
        elif name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(name, value, "must be a table")
            for key, v in value.items():
                if f"{name}.{key}" in RETIRED:
                    log.warning("%s: %s.%s is not read any more (%s); remove it", path, name, key,
                                RETIRED[f"{name}.{key}"])
                    continue
                if key not in SECTIONS[name]:
                    raise ConfigError(f"{name}.{key}", v, "unknown key")
                raw[name][key] = v
        else:
            raise ConfigError(name, value, "unknown key")
    for section, keys in SECTIONS.items():     # paths in the file are relative to the file
        for key, k in keys.items():
            v = raw[section].get(key)
            if _is_path(k) and isinstance(v, str) and v:
                p = _expand(Path(v), env)
                raw[section][key] = str(p if p.is_absolute() else base / p)
    return raw


def _coerce(k: Key, value: Any) -> Any:
    """Overrides may come from a command line as text: '500' -> 500, 'true' -> True."""
    kind = getattr(k.check, "kind", None)
    if isinstance(value, str):
        if kind == "int" and re.fullmatch(r"-?\d{1,12}", value.strip()):
            return int(value)
        if kind == "bool" and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    return value


def _apply_overrides(raw: dict[str, dict[str, Any]], overrides: Mapping[str, object]) -> None:
    for dotted, value in overrides.items():
        section, _, key = str(dotted).rpartition(".")
        if not isinstance(dotted, str) or section not in SECTIONS or key not in SECTIONS[section]:
            raise ConfigError(str(dotted), value, "unknown key")
        raw[section][key] = _coerce(SECTIONS[section][key], value)


def _section(name: str, raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        k = SECTIONS[name][key]
        v = k.check(value, k.name)
        out[key] = _expand(v, env) if isinstance(v, Path) else v
    return out


def reads(k: Key, reader: str) -> bool:
    """Whether a process checks this key's file when it loads (config check: every reader)."""
    return reader == CHECK or reader in k.readers


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _broker(values: dict[str, Any], from_file: Mapping[str, Any], section: str, reader: str) -> BrokerConfig:
    b = BrokerConfig(**values, section=section)
    parts = urlsplit(b.url)
    tls = parts.scheme == "mqtts"
    b = replace(b, host=parts.hostname or "", port=parts.port or (8883 if tls else 1883), tls=tls)
    if b.password is not None and b.password_file is not None:
        raise ConfigError(f"{section}.password", b.password, "set either password or password_file, not both")
    if b.password is not None and "password" in from_file:
        log.warning("%s.password is written in the config file; prefer %s.password_file (0600)", section, section)
    if (b.password is not None or b.password_file is not None) and b.username is None:
        raise ConfigError(f"{section}.username", None, "is required when a password is set")
    for key in ("ca_file", "cert_file", "key_file"):
        p = getattr(b, key)
        if p is None:
            continue
        if not tls:
            raise ConfigError(f"{section}.{key}", p, f"needs an mqtts:// {section}.url")
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
                env: Mapping[str, str] = os.environ, reader: str = CLI) -> Config:
    """Defaults < file (path, else $VRMBOX_CONFIG, else /etc/vrmbox/config.toml if it exists)
    < $VRMBOX_DATA_DIR (data_dir) < overrides. Every key is checked; files only for `reader`
    (keys.READERS, or "check" for all). Raises ConfigError naming the key and value."""
    if reader not in READERS and reader != CHECK:
        raise ValueError(f"unknown reader {reader!r}")
    source = find_file(path, env)
    raw: dict[str, dict[str, Any]] = _read_file(source, env) if source else {s: {} for s in SECTIONS}
    from_file = {s: dict(v) for s, v in raw.items()}
    if env.get(ENV_DATA_DIR):
        raw[""]["data_dir"] = env[ENV_DATA_DIR]
    _apply_overrides(raw, overrides or {})

    top = _section("", raw[""], env)
    data_dir = top.get("data_dir") or user_data_home(env) / "vrmbox"
    brokers: dict[str, BrokerConfig | None] = {}
    for section in ("broker", "home_broker"):
        if section == "home_broker" and not raw[section]:
            brokers[section] = None          # no home broker: the box has no local topics
            continue
        brokers[section] = _broker(_section(section, raw[section], env), from_file[section], section, reader)
    broker = brokers["broker"]
    assert broker is not None
    intake = IntakeConfig(**_section("intake", raw["intake"], env))
    if intake.per_vendor_burst > intake.max_queue:
        raise ConfigError("intake.per_vendor_burst", intake.per_vendor_burst,
                          f"must not exceed intake.max_queue ({intake.max_queue})")
    intents = IntentsConfig(**_section("intents", raw["intents"], env))
    agreements = AgreementsConfig(**_section("agreements", raw["agreements"], env))
    control_values = _section("control", raw["control"], env)
    sock = control_values.pop("socket", None)
    sock_key = "control.socket" if sock is not None else "control.socket (from data_dir)"
    sock = sock if sock is not None else data_dir / CONTROL_SOCKET_NAME
    control = ControlConfig(sock, **control_values)
    for key, p in ((sock_key, sock), ("control.button_socket", control.button)):
        if len(os.fsencode(str(p))) > MAX_SOCKET_PATH:
            raise ConfigError(key, p, f"is longer than {MAX_SOCKET_PATH} bytes (Unix socket limit)")
    if control.button == control.socket:
        raise ConfigError("control.button_socket", control.button, "must differ from control.socket")
    companion = CompanionConfig(**_section("companion", raw["companion"], env))
    if (companion.cert_file is None) != (companion.key_file is None):
        raise ConfigError("companion.key_file" if companion.key_file is None else "companion.cert_file",
                          None, "companion.cert_file and companion.key_file go together")
    values = {"broker": broker, "home_broker": brokers["home_broker"], "companion": companion}
    for k in KEYS:                        # the files this process needs must be there
        holder = values.get(k.section)
        p = getattr(holder, k.short, None) if holder is not None else None
        if k.file and p is not None and reads(k, reader) and not Path(p).is_file():
            raise ConfigError(k.name, p, "file not found")
    return Config(broker=broker, data_dir=data_dir, intake=intake, intents=intents,
                  agreements=agreements, control=control,
                  presets=top.get("presets", ()), log_level=top.get("log_level", "INFO"),
                  home_broker=brokers["home_broker"], ui=UiConfig(**_section("ui", raw["ui"], env)),
                  companion=companion,
                  source=source, reader=reader)
