"""Every publish carries Message Expiry (docs/protocol.md §3), the sealed agreement and revocation
too: their exp is inside the encryption, so the outbox keeps it beside the payload
(`outbox.expires_at`, store schema 3)."""
from __future__ import annotations

import sqlite3
import time
from types import SimpleNamespace

import paho.mqtt.client as mqtt

from device.config import load_config
from device.daemon import Daemon
from device.store import Store
from device.store.migrations import SCHEMA_VERSION


class _Client:
    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        self.sent.append((topic, properties))
        return SimpleNamespace(rc=mqtt.MQTT_ERR_SUCCESS, mid=len(self.sent))


def test_a_sealed_message_goes_out_with_the_expiry_of_what_it_seals(tmp_path):
    d = Daemon(load_config(None, {"data_dir": str(tmp_path / "box")}, env={}))
    try:
        fake = _Client()
        d.client = fake
        now = int(time.time())
        jwe = "eyJhbGciOiJFQ0RILUVTIn0.x.iv.ciphertext.tag"        # five parts: nothing readable
        d.store.queue_outbox("vrm/v2/vendor/acme/agreements", jwe, expires_at=now + 3600)
        d.store.queue_outbox("vrm/v2/vendor/acme/revocations", jwe, expires_at=now - 1)   # expired
        d._connected.set()
        d._flush_outbox()
        assert [t for t, _ in fake.sent] == ["vrm/v2/vendor/acme/agreements"]
        props = fake.sent[0][1]
        assert props is not None and 3590 <= props.MessageExpiryInterval <= 3600
        assert [r.topic for r in d.store.pending_outbox()] == ["vrm/v2/vendor/acme/agreements"]  # until PUBACK
    finally:
        d.store.close()
        d._lockfile.close()


def test_a_version_2_store_gains_the_column_and_keeps_its_unsent_messages(tmp_path):
    data = tmp_path / "box"
    with Store.open(data) as s:
        s.queue_outbox("vrm/v2/intents/bikes/i1", "a.b.c", retain=True)
    conn = sqlite3.connect(data / "store.db")
    conn.execute("ALTER TABLE outbox DROP COLUMN expires_at")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Store.open(data) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        (rec,) = s.pending_outbox()
        assert (rec.topic, rec.payload, rec.retain, rec.expires_at) == ("vrm/v2/intents/bikes/i1", "a.b.c", True, None)
        s.queue_outbox("t", "p", expires_at=123)
        assert s.pending_outbox()[-1].expires_at == 123
