"""The loaded configuration: one frozen dataclass per section. Every default comes from the key
declaration (keys.py), so a default is written once."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .keys import default as _d
from .preset import Preset

BUTTON_SOCKET_NAME = "button.sock"


@dataclass(frozen=True)
class BrokerConfig:
    url: str = _d("broker.url")
    host: str = "127.0.0.1"                 # from url
    port: int = 1883                        # from url (default 1883 mqtt, 8883 mqtts)
    tls: bool = False                       # from url: mqtts
    username: str | None = None
    password: str | None = field(default=None, repr=False)   # inline only; see secrets.broker_password
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = None            # None: random, new for every connection (keys.py)
    keepalive: int = _d("broker.keepalive")
    session_expiry: int = _d("home_broker.session_expiry")   # the home link only (keys.py)
    reconnect_min: int = _d("broker.reconnect_min")
    reconnect_max: int = _d("broker.reconnect_max")
    section: str = "broker"                 # which table it came from (for error messages)


@dataclass(frozen=True)
class IntakeConfig:
    max_queue: int = _d("intake.max_queue")
    per_vendor_per_minute: int = _d("intake.per_vendor_per_minute")
    per_vendor_burst: int = _d("intake.per_vendor_burst")
    max_message_bytes: int = _d("intake.max_message_bytes")
    max_offers_per_vendor_intent: int = _d("intake.max_offers_per_vendor_intent")
    max_vendors: int = _d("intake.max_vendors")
    verify_workers: int | str = _d("intake.verify_workers")
    receive_maximum: int = _d("intake.receive_maximum")
    max_pending_bytes: int = _d("intake.max_pending_bytes")


@dataclass(frozen=True)
class IntentsConfig:
    default_ttl_s: int = _d("intents.default_ttl_s")
    terms_id: str = _d("intents.terms_id")
    terms_text: str = _d("intents.terms_text")
    terms_uri: str | None = None
    republish_every_s: int = _d("intents.republish_every_s")


@dataclass(frozen=True)
class AgreementsConfig:
    countersign_timeout_s: int = _d("agreements.countersign_timeout_s")
    default_duration_days: int = _d("agreements.default_duration_days")
    companion_only_confirmation: bool = _d("agreements.companion_only_confirmation")
    default_purpose: str = _d("agreements.default_purpose")
    default_fields: tuple[str, ...] = _d("agreements.default_fields")


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
class CompanionConfig:
    bind: str = _d("companion.bind")
    port: int = _d("companion.port")
    secret_file: Path | None = None          # None: the development secret in the data dir
    cert_file: Path | None = None            # None: plain HTTP
    key_file: Path | None = None
    ca_file: Path | None = None
    redirect_port: int = _d("companion.redirect_port")


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
    companion: CompanionConfig = CompanionConfig()
    log_level: str = _d("log_level")
    source: Path | None = None              # the file read, None for defaults only
    reader: str = "cli"                     # the process it was loaded for (keys.READERS)
