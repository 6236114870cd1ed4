"""paho-mqtt set up the one way both sides of the protocol use it: MQTT 5, callback API 2,
QoS 1 publishes whose MQTT message expiry is what is left of the signed payload's lifetime.

Why shared: the box (device/daemon/mqtt.py) and the vendor kit (vendor_kit/worker.py) make
their clients, connect and publish the same way, and "never let a broker keep a message
longer than its signature is valid" is one rule. What differs between them is said by the
caller: who retries a publish made while disconnected (`queued`).
"""
from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vrm_protocol.codec import unverified_payload

log = logging.getLogger(__name__)

QOS = 1


def new_client(client_id: str, *, manual_ack: bool = False, username: str | None = None,
               password: str | None = None, tls: bool = False, ca_certs: str | None = None,
               certfile: str | None = None, keyfile: str | None = None,
               reconnect_min: int = 1, reconnect_max: int = 30) -> mqtt.Client:
    """An MQTT 5 client (no callbacks set, not connected)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca_certs, certfile=certfile, keyfile=keyfile)
    client.reconnect_delay_set(reconnect_min, reconnect_max)
    return client


def connect(client: mqtt.Client, host: str, port: int, *, keepalive: int, clean_start: bool,
            session_expiry: int | None = None, receive_maximum: int | None = None) -> None:
    """Connect in the background (paho retries while the broker is away). CONNECT properties
    are sent only for what is given: an absent Session Expiry Interval means 0 (no session)."""
    props = None
    if session_expiry is not None or receive_maximum is not None:
        props = Properties(PacketTypes.CONNECT)
        if session_expiry is not None:
            props.SessionExpiryInterval = session_expiry
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
    client.connect_async(host, port, keepalive=keepalive, clean_start=clean_start, properties=props)


def seconds_left(exp: int, now: int) -> int:
    """What is left of a lifetime that ends at `exp` (0 once it has)."""
    return max(0, exp - now)


def remaining(payload: str, now: int) -> int | None:
    """Seconds until a signed payload expires (0 if it has); None for an empty/unsigned one."""
    if payload.count(".") == 4:                 # a JWE: its exp is sealed; the caller knows it
        return None
    exp = unverified_payload(payload).get("exp") if payload else None
    return seconds_left(exp, now) if isinstance(exp, int) and not isinstance(exp, bool) else None


def expiry_props(seconds: int | None) -> Properties | None:
    """PUBLISH properties with the message expiry; None (no expiry) for None."""
    if seconds is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


def publish(client: mqtt.Client, topic: str, payload: str | bytes, *, retain: bool,
            expiry: int | None, qos: int = QOS) -> mqtt.MQTTMessageInfo:
    """Publish with the broker told to drop the message after `expiry` seconds. Whether it
    counts as sent is the caller's to judge with `queued`."""
    return client.publish(topic, payload, qos=qos, retain=retain, properties=expiry_props(expiry))


def queued(rc: int, *, paho_resends_offline: bool) -> bool:
    """Whether a publish's return code means the message is on its way.

    `MQTT_ERR_NO_CONN` (published while disconnected) is the one code the two sides read
    differently, because they differ in who sends it again. paho keeps such a message in its
    own queue and sends it after the reconnect of *that client object*:

    * the vendor kit keeps one client for its life (and may have a persistent session), so it
      passes True: the message is paho's to deliver, its mid is tracked until the PUBACK, and
      its outbox must not publish it a second time;
    * the box passes False: its store's outbox is the only queue it trusts. The market link
      keeps no session and is usually replaced by a new client on reconnect (discarding paho's
      queue), and every reconnect republishes what the outbox still holds; so a NO_CONN
      publish counts as not sent and is retried from the outbox (or, for receipts, kept due).
    """
    if rc == mqtt.MQTT_ERR_SUCCESS:
        return True
    return paho_resends_offline and rc == mqtt.MQTT_ERR_NO_CONN
