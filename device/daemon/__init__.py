"""`vrmbox run`: the one process that speaks MQTT and owns the store (docs/architecture.md).

Modules: `service` (the daemon: MQTT callbacks, the worker, lifecycle), `access` (who is on a
socket), `ops` (the one allow-list of operations), `held` (requests waiting for a press),
`sockets` (the local Unix sockets), `events` (fan-out to subscribers), `notify` (systemd).
"""
from .service import AlreadyRunning, Daemon

__all__ = ["AlreadyRunning", "Daemon"]
