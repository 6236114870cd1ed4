"""Value checks for config keys: each takes (value, dotted key) and returns the value the box
uses, or raises ConfigError naming the key, the value and the fix. Pure: no file is opened here.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from vrm_protocol.messages import SLUG_RE, SLUG_RULE

from .preset import MAX_ATTRS, MAX_PRESETS, MAX_STR, Preset

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
SECRET_KEYS = frozenset({"broker.password", "home_broker.password"})


class ConfigError(ValueError):
    """A configuration the box refuses; the message names the key and the value."""

    def __init__(self, key: str | None, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        if key is None:
            super().__init__(f"config file '{value}': {reason}")
        else:
            shown = "'***'" if key in SECRET_KEYS and value is not None else _show(value)
            super().__init__(f"config key '{key}' = {shown}: {reason}")


def _show(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


Check = Callable[[Any, str], Any]


def int_range(lo: int, hi: int) -> Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, "must be an integer")
        if not lo <= value <= hi:
            raise ConfigError(key, value, f"must be between {lo} and {hi}")
        return value
    check.kind = "int"  # type: ignore[attr-defined]
    return check


def workers(value: Any, key: str) -> int | str:
    """`intake.verify_workers`: "auto" or a number of processes."""
    if value == "auto":
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise ConfigError(key, value, 'must be "auto" or a number of processes, 0..64')
    return value


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "must be true or false")
    return value


boolean.kind = "bool"  # type: ignore[attr-defined]


def string(max_len: int = MAX_STR, optional: bool = False) -> Check:
    def check(value: Any, key: str) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise ConfigError(key, value, "must be a string")
        if not value or len(value) > max_len:
            raise ConfigError(key, value, f"must be 1..{max_len} characters")
        return value
    return check


def path(optional: bool = True) -> Check:
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


def url(value: Any, key: str) -> str:
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


def slug(value: Any, key: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise ConfigError(key, value, SLUG_RULE)
    return value


def client_id(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CLIENT_ID_RE.match(value):
        raise ConfigError(key, value, "must be 1..64 characters of [A-Za-z0-9._-]")
    return value


def names(max_items: int = 32) -> Check:
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


def fields(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 32 or not all(
            isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) for v in value):
        raise ConfigError(key, value, "must be a list of profile field names")
    return tuple(value)


fields.kind = "list"  # type: ignore[attr-defined]


def level(value: Any, key: str) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ConfigError(key, value, f"must be one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _scalar_ok(v: Any) -> bool:
    if isinstance(v, str):
        return len(v) <= MAX_STR
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, (bool, int))


def presets(value: Any, key: str) -> tuple[Preset, ...]:
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
        name = string(64)(p["name"], f"{where}.name")
        if any(q.name == name for q in out):
            raise ConfigError(f"{where}.name", name, "is used by another preset")
        category = slug(p["category"], f"{where}.category")
        description = string(MAX_STR, optional=True)(p.get("description"), f"{where}.description")
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


presets.kind = "list"  # type: ignore[attr-defined]
