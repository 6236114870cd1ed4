"""paho-mqtt at the edge: a client for a configured broker, and publishing with the MQTT 5
message expiry set to what is left of a signed payload's lifetime.

Why a module: the market connection and the home-broker connection are made the same way, and
"never let the broker keep a message longer than its signature is valid" is one rule.
"""
from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vrm_protocol.codec import unverified_payload

from ..config import BrokerConfig, broker_password

log = logging.getLogger(__name__)


def make_client(b: BrokerConfig, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if b.username:
        client.username_pw_set(b.username, broker_password(b))
    if b.tls:
        client.tls_set(ca_certs=str(b.ca_file) if b.ca_file else None,
                       certfile=str(b.cert_file) if b.cert_file else None,
                       keyfile=str(b.key_file) if b.key_file else None)
    client.reconnect_delay_set(b.reconnect_min, b.reconnect_max)
    return client


RECEIVE_MAXIMUM = 100    # unacknowledged messages the broker may have in flight (home link)


def connect(client: mqtt.Client, b: BrokerConfig, clean_start: bool = False,
            receive_maximum: int = RECEIVE_MAXIMUM, session_expiry: int | None = None) -> None:
    """`receive_maximum` bounds what waits unacknowledged in the box, whatever the broker
    allows. The market link sets it from intake.receive_maximum (a few thousand): slots held
    by forgeries waiting for their signature check must leave room for genuine offers, and
    the fair lanes hold them all without blocking (service.py). `session_expiry` overrides the
    config's (the market link keeps no session at all)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = b.session_expiry if session_expiry is None else session_expiry
    props.ReceiveMaximum = receive_maximum
    client.connect_async(b.host, b.port, keepalive=b.keepalive, clean_start=clean_start,
                         properties=props)


def remaining(payload: str, now: int) -> int | None:
    """Seconds until a signed payload expires (0 if it has); None for an empty/unsigned one."""
    if payload.count(".") == 4:                 # a JWE: its exp is sealed (outbox.expires_at)
        return None
    exp = unverified_payload(payload).get("exp") if payload else None
    return max(0, exp - now) if isinstance(exp, int) and not isinstance(exp, bool) else None


def expiry_props(seconds: int | None) -> Properties | None:
    if seconds is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


def publish(client: mqtt.Client, topic: str, payload: str | bytes, retain: bool,
            now: int, expires_at: int | None = None) -> mqtt.MQTTMessageInfo | None:
    """QoS 1, expiring with the signature; None if it already expired or was not queued.
    `expires_at` for a sealed payload, whose exp is inside the encryption."""
    left = remaining(payload.decode() if isinstance(payload, bytes) else payload, now)
    if left is None and expires_at is not None:
        left = max(0, expires_at - now)
    if left == 0:
        return None
    info = client.publish(topic, payload, qos=1, retain=retain, properties=expiry_props(left))
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        log.warning("publish to %s not queued: %s", topic, info.rc)
        return None
    return info


def is_refusal(rc: Any) -> bool:
    """A PUBACK reason code that says the broker will never take this message (e.g. not
    authorised by its ACL), as opposed to a connection that went away."""
    return bool(getattr(rc, "is_failure", False))
