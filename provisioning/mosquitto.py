"""Mosquitto configuration the project writes: for the box's broker and for the test brokers.

One function, so tests run against exactly the settings the box ships with. The key point:
Mosquitto's default max_queued_messages (1000 per client) silently drops messages for a
slow or offline subscriber even at QoS 1, so the box's broker lifts that limit and bounds
the queue by bytes instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vrm_protocol import MAX_MESSAGE_BYTES

# Largest MQTT packet: a maximal VRM message plus topic and property overhead.
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 4096
# Per-client queue bound in bytes (0 in max_queued_messages = no count limit).
MAX_QUEUED_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Listener:
    """Where a config makes Mosquitto listen."""

    port: int
    bind: str
    tls: bool = False


def read_listener(conf_text: str) -> Listener:
    """The listener of a config this module wrote (one listener; TLS when it names a certfile)."""
    port, bind, tls = None, "127.0.0.1", False
    for line in conf_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "listener":
            port = int(words[1])
            bind = words[2] if len(words) > 2 else "0.0.0.0"
        elif words and words[0] == "certfile":
            tls = True
    if port is None:
        raise ValueError("the config has no listener line")
    return Listener(port, bind, tls)


def mosquitto_conf(*, port: int, data_dir: Path, bind: str = "127.0.0.1",
                   password_file: Path | None = None, acl_file: Path | None = None,
                   tls: dict[str, Path] | None = None, user: str | None = None) -> str:
    """Text of a mosquitto.conf. Without password_file the broker allows anonymous clients:
    only tests use that, and only on loopback."""
    if password_file is None and bind not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("anonymous access is only allowed on loopback")
    lines = [
        "per_listener_settings false",
        # When started as root Mosquitto drops to `user` (default "mosquitto"), which must be
        # able to write persistence_location; tests run it as their own user.
        *([f"user {user}"] if user else []),
        f"persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 1",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # Never drop queued QoS 1 messages by count; bound memory by bytes instead.
        "max_queued_messages 0",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        "max_inflight_messages 100",
        "queue_qos0_messages false",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "persistent_client_expiration 30d",
        "sys_interval 1",
        f"listener {port} {bind}",
        "protocol mqtt",
    ]
    if password_file is not None:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines += ["allow_anonymous true"]
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    if tls:
        lines += [f"cafile {tls['cafile']}", f"certfile {tls['certfile']}", f"keyfile {tls['keyfile']}",
                  "tls_version tlsv1.2"]
    return "\n".join(lines) + "\n"
