"""The connection to the box's own broker on the LAN, for local topics only.

Why apart from the market connection: anything the market broker carries can be read by vendors
and the broker's operator. The box's availability (online/offline) is useful to its own
peripherals but would let a vendor tie every intent published after a restart to one box, so
it goes only here, retained with a message expiry, and never to the market broker.
"""
from __future__ import annotations

import logging
import secrets
import threading

import paho.mqtt.client as mqtt

from vrm_protocol import topics

from ..config import BrokerConfig
from .mqtt import connect, expiry_props, make_client

log = logging.getLogger(__name__)

STATUS_EXPIRY_S = 3600      # a retained "online"/"offline" that nobody refreshes is gone after this


class HomeLink:
    def __init__(self, cfg: BrokerConfig, box_id: str) -> None:
        self.cfg = cfg
        self.box_id = box_id
        self.connected = threading.Event()
        # a fresh clean session each start: nothing is queued for the box here
        self.client = make_client(cfg, cfg.client_id or "vrmbox-home-" + secrets.token_hex(6))
        self.client.will_set(topics.availability(box_id), "offline", qos=1, retain=True,
                             properties=expiry_props(STATUS_EXPIRY_S))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            log.error("home broker refused the connection: %s", rc)
            return
        self.connected.set()
        self.announce("online")

    def announce(self, state: str) -> None:
        self.client.publish(topics.availability(self.box_id), state, qos=1, retain=True,
                            properties=expiry_props(STATUS_EXPIRY_S))

    def start(self) -> None:
        connect(self.client, self.cfg, clean_start=True)
        self.client.loop_start()

    def stop(self, clear: bool = False) -> None:
        """Say offline (or, after an erase, remove the retained status) and disconnect."""
        if self.connected.is_set():
            info = self.client.publish(topics.availability(self.box_id), b"" if clear else "offline",
                                       qos=1, retain=True, properties=expiry_props(STATUS_EXPIRY_S))
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
