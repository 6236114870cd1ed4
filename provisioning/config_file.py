"""The box's config.toml as provisioning writes it: every key of device.config.SCHEMA, each with
a comment, values from the provisioned layout or else config.py's own defaults (never re-typed
here), so `vrmbox config check` accepts it and a person can see every setting in one file.
"""
from __future__ import annotations

import json
import logging
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Mapping

from device import config

log = logging.getLogger(__name__)

# A short "why/what" per key; docs/config.md has the full reference.
COMMENTS: dict[str, str] = {
    "data_dir": "Where the box keeps its store and keys ($VRMBOX_DATA_DIR wins over this).",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    "presets": "Intents a button casts with one press: [[presets]] tables with name, category, "
               "description, attributes. None by default.",
    "broker.url": "mqtts://host[:port] (TLS, 8883) or mqtt://host[:port] (plain, loopback only).",
    "broker.username": "The box's broker account (no default; there are no default passwords).",
    "broker.password": "Inline password: possible, discouraged; use password_file.",
    "broker.password_file": "File holding the broker password (first line), mode 0600.",
    "broker.ca_file": "CA certificate(s) the broker's certificate must chain to.",
    "broker.cert_file": "Client certificate for mutual TLS (optional).",
    "broker.key_file": "Key of cert_file, when cert_file does not hold it.",
    "broker.client_id": "MQTT client id; default: the box chooses one (docs/config.md).",
    "broker.keepalive": "Seconds between MQTT keep-alive pings (5..3600).",
    "broker.session_expiry": "Seconds the broker keeps the box's session and queue while offline.",
    "broker.reconnect_min": "Reconnect back-off start, seconds.",
    "broker.reconnect_max": "Reconnect back-off ceiling, seconds.",
    "intake.max_queue": "Received messages waiting for verification; full = stop reading.",
    "intake.per_vendor_per_minute": "Per vendor token bucket: refill per minute ...",
    "intake.per_vendor_burst": "... and its size.",
    "intake.max_message_bytes": "Larger payloads are dropped unread (1024..65536).",
    "intake.max_offers_per_vendor_intent": "Offers kept from one vendor for one intent.",
    "intents.default_ttl_s": "Lifetime of a published intent, seconds.",
    "intents.terms_id": "The terms the person proffers with every intent: an id (slug) ...",
    "intents.terms_text": "... and the text, whose SHA-256 every offer must echo.",
    "intents.terms_uri": "Public URL of the terms text (optional).",
    "intents.republish_window_s": "After a reconnect, each live intent is re-published at its own "
                                  "random time within this many seconds.",
    "agreements.default_purpose": "Purpose stated when an offer is accepted on the box itself.",
    "agreements.default_fields": "Profile fields an accept on the box shares.",
    "agreements.countersign_timeout_s": "Seconds to wait for the vendor's countersignature.",
    "agreements.default_duration_days": "Agreement duration offered by default, days.",
    "agreements.companion_only_confirmation": "true: only the paired phone confirms, not the button.",
    "control.socket": "Unix socket of the control API (CLI, companion app).",
    "control.button_socket": "Unix socket of the box's button handler (the UI).",
    "control.control_users": "Accounts that may open control.sock (none listed: the box's own user only).",
    "control.control_groups": "Groups whose members may open control.sock.",
    "control.button_users": "Accounts that may open button.sock (a press counts as consent).",
    "control.button_groups": "Groups whose members may open button.sock.",
}

# Sections that exist only when given: their defaults are shown commented out.
OPTIONAL_SECTIONS = ("home_broker",)
OPTIONAL_HEADERS = {"home_broker": "The box's own broker on the LAN (local topics: availability, "
                                   "the remote). Same keys as [broker]; absent: none."}
_DEFAULTS = {"broker": config.BrokerConfig(), "home_broker": config.BrokerConfig(), "intake": config.IntakeConfig(),
             "intents": config.IntentsConfig(), "agreements": config.AgreementsConfig()}
# Shown commented out for keys without a default.
EXAMPLES: dict[str, object] = {
    "broker.username": "box-livingroom", "broker.password": "...",
    "broker.password_file": "/etc/vrmbox/secrets/broker.password",
    "broker.ca_file": "/etc/vrmbox/tls/ca.pem", "broker.cert_file": "/etc/vrmbox/tls/box.pem",
    "broker.key_file": "/etc/vrmbox/tls/box.key", "broker.client_id": "vrmbox-livingroom",
    "intents.terms_uri": "https://example.org/terms/vrm-basic-1",
    "control.socket": "/run/vrmbox/control.sock",
    "control.button_socket": "/run/vrmbox/button.sock",
    "control.control_users": ["vrmbox", "vrmbox-companion"], "control.control_groups": ["vrmbox-admin"],
    "control.button_users": ["vrmbox-ui"], "control.button_groups": ["vrmbox-ui"],
}
_DERIVED = {"broker.host", "broker.port", "broker.tls"}     # read from url, not keys


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _default(section: str, key: str) -> Any:
    if not section:
        return {f.name: f.default for f in fields(config.Config)}.get(key)  # type: ignore[arg-type]
    obj = _DEFAULTS.get(section)
    if obj is None or key not in {f.name for f in fields(obj)}:
        return None
    return getattr(obj, key)


def config_toml(values: Mapping[str, Any], header: str) -> str:
    """The file: `values` (dotted keys) win; other keys show config.py's default, or are
    commented out when there is none. Keys config.py does not know are left out."""
    unknown = [k for k in values if k.rpartition(".")[0] not in config.SCHEMA
               or k.rpartition(".")[2] not in config.SCHEMA[k.rpartition(".")[0]]]
    if unknown:
        raise ValueError(f"not config keys: {unknown}")
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    for section, keys in config.SCHEMA.items():
        optional = section in OPTIONAL_SECTIONS and not any(
            k.startswith(f"{section}.") for k in values)
        if section:
            if section in OPTIONAL_HEADERS:
                out += ["", f"# {OPTIONAL_HEADERS[section]}"]
            out += [""] if section not in OPTIONAL_HEADERS else []
            out.append(f"# [{section}]" if optional else f"[{section}]")
        for key in keys:
            dotted = f"{section}.{key}" if section else key
            if dotted.replace("home_broker.", "broker.") in _DERIVED or key == "presets":
                continue
            out.append(f"# {COMMENTS.get(dotted) or COMMENTS.get(f'broker.{key}', dotted)}")
            value = values.get(dotted, _default(section, key))
            if optional and value is not None and value is not MISSING:
                out.append(f"# {key} = {_toml(value)}")
            elif value is None or value is MISSING:
                example = EXAMPLES.get(dotted, EXAMPLES.get(f"broker.{key}") if section == "home_broker" else None)
                out.append(f"# {key} = {_toml(example)}" if example is not None else f"# {key} =")
            else:
                out.append(f"{key} = {_toml(value)}")
        if not section:
            out.append(f"# {COMMENTS['presets']}")
            out.append("# [[presets]]\n# name = \"Bike\"\n# category = \"bikes\"\n"
                       "# attributes = { budget_max = 800, currency = \"EUR\" }")
    return "\n".join(out) + "\n"
