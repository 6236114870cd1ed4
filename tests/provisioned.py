"""Test helpers: run `vrmbox provision` into a throwaway root, and MQTT 5 clients that report
what the broker answered (CONNACK, SUBACK, PUBACK reason codes) instead of guessing by time."""
from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.launch import ROOT, child_env
from provisioning.layout import Layout, layout_for


def new_root() -> Path:
    """A root directory outside pytest's 0700 tmp folder, searchable by the account a
    root-started Mosquitto drops to (the files inside keep their own modes)."""
    root = Path(tempfile.mkdtemp(prefix="vrm-root-"))
    root.chmod(0o755)
    return root


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def vrmbox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `vrmbox` CLI in a child (never the machine's /etc/vrmbox/config.toml)."""
    e = child_env()
    e.setdefault("VRMBOX_CONFIG", os.devnull)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "vrmbox", *args], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=120)


def provision(root: Path, port: int, *extra: str) -> subprocess.CompletedProcess:
    return vrmbox("provision", "--root", str(root), "--broker-port", str(port),
                  "--broker-bind", "127.0.0.1", *extra)


def layout(root: Path) -> Layout:
    return layout_for(root, os.geteuid())


def box_credentials(lay: Layout) -> tuple[str, str]:
    return lay.box_username.read_text().strip(), lay.box_password.read_text().strip()


@dataclass
class Client:
    """A paho MQTT 5 client over TLS whose broker answers are kept, each with an event."""

    host: str
    port: int
    ca: Path | None
    username: str | None = None
    password: str | None = None
    name: str = "client"
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Condition()
        self.connack: object = None
        self.subacks: dict[int, list[int]] = {}
        self.pubacks: dict[int, int] = {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{self.name}-{os.urandom(4).hex()}",
                             protocol=mqtt.MQTTv5)
        if self.ca is not None:
            self.c.tls_set(ca_certs=str(self.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if self.username is not None:
            self.c.username_pw_set(self.username, self.password)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message

    def _notify(self, fn) -> None:  # noqa: ANN001
        with self.lock:
            fn()
            self.lock.notify_all()

    def _on_connect(self, _c, _u, _f, rc, _p) -> None:  # noqa: ANN001
        self._notify(lambda: setattr(self, "connack", rc))

    def _on_subscribe(self, _c, _u, mid, rcs, _p) -> None:  # noqa: ANN001
        self._notify(lambda: self.subacks.__setitem__(mid, [r.value for r in rcs]))

    def _on_publish(self, _c, _u, mid, rc, _p) -> None:  # noqa: ANN001
        self._notify(lambda: self.pubacks.__setitem__(mid, rc.value))

    def _on_message(self, _c, _u, msg) -> None:  # noqa: ANN001
        self._notify(lambda: self.messages.append((msg.topic, msg.payload)))

    def wait(self, pred, what: str, timeout: float = 15.0):  # noqa: ANN001
        with self.lock:
            if not self.lock.wait_for(pred, timeout):
                raise AssertionError(f"{self.name}: timed out waiting for {what}")
            return pred()

    def connect(self) -> int:
        """The CONNACK reason code (0 = accepted)."""
        self.c.connect(self.host, self.port, keepalive=30)
        self.c.loop_start()
        rc = self.wait(lambda: self.connack, "CONNACK")
        return rc.value  # type: ignore[union-attr]

    def subscribe(self, topic: str) -> int:
        """The SUBACK reason code for one filter (0/1 granted, 135 not authorized)."""
        _, mid = self.c.subscribe(topic, qos=1)
        return self.wait(lambda: self.subacks.get(mid), f"SUBACK {topic}")[0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """The PUBACK reason code (0 success, 16 no subscribers, 135 not authorized)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        self.wait(lambda: info.mid in self.pubacks, f"PUBACK {topic}")
        return self.pubacks[info.mid]

    def got(self, topic: str, payload: bytes) -> bool:
        with self.lock:
            return (topic, payload) in self.messages

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
