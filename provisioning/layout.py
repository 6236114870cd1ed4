"""Where a provisioned box keeps each file: one place for every path provisioning writes.

System-wide (installed, or `--root DIR`, which puts everything under DIR as if it were /):
config in /etc/vrmbox, data in /var/lib/vrmbox, sockets in /run/vrmbox. For an ordinary user
without --root: $XDG_CONFIG_HOME/vrmbox and $XDG_DATA_HOME/vrmbox (docs/provisioning.md).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from device.config import user_config_dir, user_data_home

log = logging.getLogger(__name__)

RUNTIME_DIR_NAME = "vrmbox"          # systemd RuntimeDirectory= of the daemon: /run/vrmbox


@dataclass(frozen=True)
class Layout:
    system: bool          # installed system-wide (accounts, /run) rather than in a home dir
    etc: Path             # config, secrets, TLS, broker config
    data: Path            # the box's store and keys (Store.open)
    broker_data: Path     # Mosquitto's persistence
    run: Path             # the daemon's sockets

    @property
    def config(self) -> Path:
        return self.etc / "config.toml"

    @property
    def secrets(self) -> Path:
        return self.etc / "secrets"

    @property
    def tls(self) -> Path:
        return self.etc / "tls"

    @property
    def broker(self) -> Path:
        return self.etc / "broker"

    # --- files
    @property
    def broker_conf(self) -> Path:
        return self.broker / "mosquitto.conf"

    @property
    def passwd(self) -> Path:
        return self.broker / "passwd"

    @property
    def acl(self) -> Path:
        return self.broker / "acl"

    @property
    def box_username(self) -> Path:
        return self.secrets / "broker.username"

    @property
    def box_password(self) -> Path:
        return self.secrets / "broker.password"

    @property
    def companion_secret(self) -> Path:
        return self.secrets / "companion_secret"

    @property
    def market_password(self) -> Path:
        return self.secrets / "market.password"

    @property
    def market_ca(self) -> Path:
        return self.tls / "market-ca.pem"

    def pem(self, name: str) -> Path:
        """tls/<name>.pem (certificate) ..."""
        return self.tls / f"{name}.pem"

    def key(self, name: str) -> Path:
        """... and tls/<name>.key (its private key)."""
        return self.tls / f"{name}.key"

    @property
    def companion_fingerprint(self) -> Path:
        """SHA-256 of the companion's certificate, for the screen to show at pairing."""
        return self.tls / "companion.sha256"

    @property
    def control_socket(self) -> Path:
        return self.run / "control.sock"

    @property
    def button_socket(self) -> Path:
        return self.run / "button.sock"


def layout_for(root: Path | None, euid: int, env: Mapping[str, str] = os.environ) -> Layout:
    """System-wide under root (default /) when root is given or we are root; else XDG dirs."""
    if root is not None or euid == 0:
        r = Path(root) if root is not None else Path("/")
        return Layout(True, r / "etc/vrmbox", r / "var/lib/vrmbox", r / "var/lib/vrmbox-broker",
                      r / "run" / RUNTIME_DIR_NAME)
    cfg = user_config_dir(env)
    data_home = user_data_home(env)
    data = data_home / "vrmbox"
    return Layout(False, cfg, data, data_home / "vrmbox-broker", data)
