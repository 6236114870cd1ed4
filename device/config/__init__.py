"""The box's configuration: one TOML file, every key declared once (keys.py), checked at load
(load.py), secrets read only where and when they are used (secrets.py). docs/config.md lists
every key; config/vrmbox.example.toml shows them all (both made by render.py)."""
from __future__ import annotations

from .checks import LOG_LEVELS, ConfigError
from .keys import (ALL, CLI, COMPANION, DAEMON, DEFAULT_BROKER_URL, DEFAULT_TERMS_ID,
                   DEFAULT_TERMS_TEXT, KEYS, READERS, SECTIONS, UI, Key)
from .load import (CHECK, CONFIG_FILE_NAME, CONTROL_SOCKET_NAME, ENV_CONFIG, ENV_DATA_DIR,
                   MAX_SOCKET_PATH, SYSTEM_CONFIG, load_config, user_config_dir, user_data_home)
from .model import (BUTTON_SOCKET_NAME, AgreementsConfig, BrokerConfig, CompanionConfig, Config,
                    ControlConfig, IntakeConfig, IntentsConfig, UiConfig)
from .preset import MAX_ATTRS, MAX_PRESETS, MAX_STR, Preset
from .secrets import broker_password, read_secret_file

__all__ = [
    "ALL", "AgreementsConfig", "BUTTON_SOCKET_NAME", "BrokerConfig", "CHECK", "CLI", "COMPANION",
    "CONFIG_FILE_NAME", "CONTROL_SOCKET_NAME", "CompanionConfig", "Config", "ConfigError",
    "ControlConfig", "DAEMON", "DEFAULT_BROKER_URL", "DEFAULT_TERMS_ID", "DEFAULT_TERMS_TEXT",
    "ENV_CONFIG", "ENV_DATA_DIR", "IntakeConfig", "IntentsConfig", "KEYS", "Key", "LOG_LEVELS",
    "MAX_ATTRS", "MAX_PRESETS", "MAX_SOCKET_PATH", "MAX_STR", "Preset", "READERS", "SECTIONS",
    "SYSTEM_CONFIG", "UI", "UiConfig", "broker_password", "load_config", "read_secret_file",
    "user_config_dir", "user_data_home",
]
