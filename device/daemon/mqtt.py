"""paho-mqtt at the box's edge: a client for a configured broker, and publishing with the
MQTT 5 message expiry set to what is left of a signed payload's lifetime.

Why a module: the market connection and the home-broker connection are made the same way from
a `BrokerConfig`. The paho set-up and the expiry rule themselves are shared with the vendor
kit (vrm_io/mqtt.py); this module only reads the box's config into them.
"""
from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt

from vrm_io import mqtt as shared
from vrm_io.mqtt import expiry_props, remaining

from ..config import BrokerConfig, broker_password

log = logging.getLogger(__name__)

__all__ = ["RECEIVE_MAXIMUM", "connect", "expiry_props", "is_refusal", "make_client", "publish", "remaining"]


def make_client(b: BrokerConfig, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    return shared.new_client(
        client_id, manual_ack=manual_ack,
        username=b.username or None, password=broker_password(b) if b.username else None,
        tls=b.tls, ca_certs=str(b.ca_file) if b.ca_file else None,
        certfile=str(b.cert_file) if b.cert_file else None,
        keyfile=str(b.key_file) if b.key_file else None,
        reconnect_min=b.reconnect_min, reconnect_max=b.reconnect_max)


RECEIVE_MAXIMUM = 100    # unacknowledged messages the broker may have in flight (home link)


def connect(client: mqtt.Client, b: BrokerConfig, clean_start: bool = False,
            receive_maximum: int = RECEIVE_MAXIMUM, session_expiry: int | None = None) -> None:
    """`receive_maximum` bounds what waits unacknowledged in the box, whatever the broker
    allows. The market link sets it from intake.receive_maximum (a few thousand): slots held
    by forgeries waiting for their signature check must leave room for genuine offers, and
    the fair lanes hold them all without blocking (service.py). `session_expiry` overrides the
    config's (the market link keeps no session at all)."""
    shared.connect(client, b.host, b.port, keepalive=b.keepalive, clean_start=clean_start,
                   session_expiry=b.session_expiry if session_expiry is None else session_expiry,
                   receive_maximum=receive_maximum)


def left_of(payload: str | bytes, now: int, expires_at: int | None = None) -> int | None:
    """Seconds a message has left: its signature's exp, or `expires_at` for a sealed payload
    (whose exp is inside the encryption); None when neither says."""
    left = remaining(payload.decode() if isinstance(payload, bytes) else payload, now)
    if left is None and expires_at is not None:
        left = shared.seconds_left(expires_at, now)
    return left


def publish(client: mqtt.Client, topic: str, payload: str | bytes, retain: bool,
            now: int, expires_at: int | None = None) -> mqtt.MQTTMessageInfo | None:
    """QoS 1, expiring with the signature (left_of); None if it already expired or was not queued."""
    left = left_of(payload, now, expires_at)
    if left == 0:
        return None
    info = shared.publish(client, topic, payload, retain=retain, expiry=left)
    # the outbox, not paho's queue, resends what a dropped link did not take (vrm_io.mqtt.queued)
    if not shared.queued(info.rc, paho_resends_offline=False):
        log.warning("publish to %s not queued: %s", topic, info.rc)
        return None
    return info


def is_refusal(rc: Any) -> bool:
    """A PUBACK reason code that says the broker will never take this message (e.g. not
    authorised by its ACL), as opposed to a connection that went away."""
    return bool(getattr(rc, "is_failure", False))
