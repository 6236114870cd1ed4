"""What a stranger on the market broker can learn from the box's connection (issue: linkable
intents, a hijackable session): no availability status there, a secret random client id, intents
re-published on their own clocks (tests/test_wire_timing.py), a refused message not retried in a loop, and a
watchdog fed only while the worker works. Real Mosquitto brokers; the daemon as a process
where the wire is the point, in-process where its parts are."""
from __future__ import annotations

import json
import re
import socket
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import Broker
from device.config import load_config
from device.daemon import Daemon
from device.daemon.home import STATUS_EXPIRY_S
from device.store import Store
from processes import box_config, daemon, vrmbox, wait_for
from vendor_messages import TestVendor
from vrm_protocol import topics

pytestmark = pytest.mark.timeout(180)


class Watcher:
    """A subscriber that records (topic, payload, properties, arrival time)."""

    def __init__(self, broker: Broker, *subs: str) -> None:
        self.got: list[tuple[str, bytes, object, float]] = []
        self.acked = 0
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)
        self.c.on_message = lambda cl, u, m: self.got.append((m.topic, m.payload, m.properties,
                                                               time.monotonic()))
        self.c.on_subscribe = lambda *a: setattr(self, "acked", self.acked + 1)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        for t in subs:
            self.c.subscribe(t, qos=1)
        wait_for(lambda: self.acked == len(subs), what="SUBACK")

    def barrier(self, topic: str) -> None:
        """Publish a marker and wait for it: everything retained or sent before it has arrived."""
        marker = uuid.uuid4().hex.encode()
        self.c.publish(topic, marker, qos=1).wait_for_publish(5)
        wait_for(lambda: any(p == marker for _, p, _, _ in self.got), what="the barrier marker")

    def topics(self, prefix: str) -> list[str]:
        return [t for t, p, _, _ in self.got if t.startswith(prefix) and p]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def home(brokers):
    return brokers("home")


def test_status_only_on_the_home_broker_with_expiry_never_on_the_market(tmp_path, broker, home,
                                                                         monkeypatch):
    box_config(tmp_path, monkeypatch, f'[home_broker]\nurl = "{home.url}"\n')
    market = Watcher(broker, f"{topics.PREFIX}/status/#", "#")
    local = Watcher(home, topics.availability("+"))
    proc = daemon(tmp_path / "box", broker.url, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: any(p == b"online" for _, p, _, _ in local.got), what="online on the home broker")
        _, _, props, _ = next(g for g in local.got if g[1] == b"online")
        assert 0 < props.MessageExpiryInterval <= STATUS_EXPIRY_S
        intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=tmp_path / "box").stdout)
        wait_for(lambda: market.topics(topics.intents("bikes")[:-1]), what="the intent on the market")
        proc.kill()                                   # no clean disconnect: the home broker sends the will
        wait_for(lambda: local.got[-1][1] == b"offline", timeout=30, what="last will on the home broker")
        assert 0 < local.got[-1][2].MessageExpiryInterval <= STATUS_EXPIRY_S
        market.barrier("zz/test/barrier")
        assert market.topics(f"{topics.PREFIX}/status/") == []
        status_id = local.got[-1][0].rsplit("/", 1)[1]
        assert all(status_id.encode() not in p and status_id not in t for t, p, _, _ in market.got)
        assert intent["intent"] not in status_id
    finally:
        proc.stop()
        market.close()
        local.close()


def test_client_id_is_random_new_at_every_start_and_kept_nowhere(tmp_path, broker):
    ids = []
    for name in ("a", "b", "a"):
        cfg = load_config(None, {"data_dir": str(tmp_path / name)}, env={})
        d = Daemon(cfg)
        ids.append((d.client_id(), d.box_id))
        assert d.store.get_setting("mqtt_client_id") is None            # not kept
        d.store.close()
        d._lockfile.close()
    (a_client, a_box), (b_client, b_box), (a_again, a_box_again) = ids
    assert len({a_client, b_client, a_again}) == 3
    assert all(c.startswith("vrmbox-") and len(c) == 23 for c in (a_client, b_client, a_again))
    assert a_box == a_box_again and a_box[4:] not in a_client and b_box[4:] not in b_client


def _connect_as(broker, client_id: str, clean_start: bool, got: list | None = None) -> tuple[mqtt.Client, dict]:
    """A stranger with its own account connecting under `client_id` (as if read from a log)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    flags: dict = {}
    c.on_connect = lambda cl, u, f, rc, p: flags.setdefault("present", f.session_present)
    c.on_disconnect = lambda cl, u, f, rc, p: flags.setdefault("kicked", rc)
    c.on_subscribe = lambda *a: flags.__setitem__("subacks", flags.get("subacks", 0) + 1)
    if got is not None:
        c.on_message = lambda cl, u, m: got.append(m.topic)
    c.connect(broker.host, broker.port, clean_start=clean_start)
    c.loop_start()
    wait_for(lambda: "present" in flags, what="CONNACK")
    return c, flags


def _box_ids_in_log(broker) -> list[str]:
    """The box's client ids as the broker operator's log shows them ("... as vrmbox-...")."""
    text = broker.log.read_text(errors="replace") if broker.log.exists() else ""
    return list(dict.fromkeys(re.findall(r" as (vrmbox-[0-9a-f]{16}) ", text)))


def test_an_id_read_from_the_log_names_no_session_once_the_box_is_away(tmp_path, broker, monkeypatch):
    """With the box offline, a stranger connecting under any id the broker's log showed for it
    finds no session and gets none of the offers sent meanwhile: the market link keeps no
    session (clean start, expiry 0). The old box kept a 7-day session under one id, so the
    stranger got the queued offers and, with them, which intents were one box's."""
    box_config(tmp_path, monkeypatch)
    data = tmp_path / "box"
    watch = Watcher(broker, f"{topics.PREFIX}/intents/#")
    proc = daemon(data, broker.url, tmp_path / "daemon.log").start()
    try:
        intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        wait_for(lambda: watch.topics(f"{topics.PREFIX}/intents/"), what="intent on the wire")
        wait_for(lambda: _box_ids_in_log(broker), what="the box's id in the broker's log")
    finally:
        proc.stop()
    watch.c.publish(topics.offers(intent), b"an offer sent while the box is away", qos=1).wait_for_publish(5)
    ids = _box_ids_in_log(broker)
    for cid in ids:
        got: list[str] = []
        c, flags = _connect_as(broker, cid, clean_start=False, got=got)
        try:
            assert flags["present"] is False, cid
            marker = uuid.uuid4().hex
            c.subscribe(f"zz/{marker}", qos=1)
            wait_for(lambda: flags.get("subacks") == 1, what="SUBACK")   # listening before the marker
            watch.c.publish(f"zz/{marker}", b"m", qos=1).wait_for_publish(5)
            wait_for(lambda: f"zz/{marker}" in got, what="the barrier")   # what was queued came first
            assert got == [f"zz/{marker}"], got
        finally:
            c.loop_stop()
            c.disconnect()
    watch.close()


def test_a_stranger_under_the_live_id_does_not_keep_the_box_out(tmp_path, broker, monkeypatch):
    """A stranger who reads the box's id from the log and connects under it throws the box out
    once; the box comes back under a new id (the two do not take the id back and forth) and
    still gets its offers."""
    box_config(tmp_path, monkeypatch)
    data = tmp_path / "box"
    proc = daemon(data, broker.url, tmp_path / "daemon.log").start()
    try:
        intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        (first,) = wait_for(lambda: _box_ids_in_log(broker), what="the box's id in the broker's log")
        c, flags = _connect_as(broker, first, clean_start=True)
        try:
            second = wait_for(lambda: [i for i in _box_ids_in_log(broker) if i != first],
                              what="the box back under a new id")
            wait_for(lambda: json.loads(vrmbox("status", "--json", data_dir=data).stdout)["connected"],
                     what="the box connected again")
            c.publish("zz/ping", b"x", qos=1).wait_for_publish(5)     # the stranger still holds its own
            assert "kicked" not in flags, flags
            assert first not in second
            acme = TestVendor("acme")
            pub = Watcher(broker)
            pub.c.publish(topics.vendor_profile("acme"), acme.profile(), qos=1, retain=True).wait_for_publish(5)
            with Store.open(data) as st:
                token = st.get_intent(intent).token
            def stored() -> bool:
                # a re-send until the box, back under its new id and subscribed again, has it
                pub.c.publish(topics.offers(intent), offer, qos=1).wait_for_publish(5)
                with Store.open(data) as st:
                    return bool(st.list_offers())
            offer = acme.offer(token)
            wait_for(stored, timeout=30, what="an offer stored after the takeover")
            pub.close()
        finally:
            c.loop_stop()
            c.disconnect()
    finally:
        proc.stop()


def test_the_watchdog_is_fed_only_while_the_worker_makes_progress(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    d = Daemon(load_config(None, {"data_dir": str(tmp_path / "box")}, env={}))
    try:
        assert d.heartbeat() is True
        assert sock.recv(256) == b"WATCHDOG=1"
        d._beat = time.monotonic() - 60                       # as if the worker were stuck
        assert d.heartbeat() is False
        from device.daemon.notify import notify
        notify("MARK=1")                                      # the next datagram must be the marker
        assert sock.recv(256) == b"MARK=1"
        d._beat = time.monotonic()
        d._dispatch_beat = time.monotonic() - 60              # messages wait, the dispatcher is stuck
        d._lanes.admit("acme", object(), 100)
        assert d.heartbeat() is False
        notify("MARK=2")
        assert sock.recv(256) == b"MARK=2"
    finally:
        d.store.close()
        d._lockfile.close()
        sock.close()


def test_a_message_the_broker_refuses_is_recorded_once_and_not_retried(tmp_path, brokers, monkeypatch):
    """An ACL that will never let the box publish an agreement: the PUBACK's refusal is terminal."""
    from vendor_messages import TestVendor
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite #\ntopic deny {topics.agreements('+')}\n")
    broker = brokers("acl-broker", acl_file=acl)
    box_config(tmp_path, monkeypatch)
    data = tmp_path / "box"
    log = tmp_path / "daemon.log"
    proc = daemon(data, broker.url, log).start()
    watch = Watcher(broker, f"{topics.PREFIX}/#")
    try:
        vrmbox("profile", "set", "email", "ann@example.org", data_dir=data)
        intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        token = wait_for(lambda: next((p for t, p, _, _ in watch.got if t == topics.intent("bikes", intent)
                                       and p), None), what="the intent")
        v = TestVendor("acme")
        watch.c.publish(topics.vendor_profile("acme"), v.profile(), qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: json.loads(vrmbox("vendors", "--json", data_dir=data).stdout), what="vendor pinned")
        watch.c.publish(topics.offers(intent), v.offer(token.decode()), qos=1).wait_for_publish(5)
        offer = wait_for(lambda: json.loads(vrmbox("offers", "--json", data_dir=data).stdout), what="offer")
        agreement = json.loads(vrmbox("offer", "accept", "--fields", "email", "--json", "--",
                                      offer[0]["offer"], data_dir=data).stdout)["agreement"]
        vrmbox("agreement", "confirm", "--", agreement, data_dir=data)
        status = wait_for(lambda: (s := json.loads(vrmbox("status", "--json", data_dir=data).stdout))["refused"]
                          and s, what="the refusal shown in status")
        assert [r["topic"] for r in status["refused"]] == [topics.agreements("acme")]
        # barrier: a later message gets through, and still only one refusal was logged
        second = json.loads(vrmbox("intent", "add", "tents", "--json", data_dir=data).stdout)["intent"]
        wait_for(lambda: any(t == topics.intent("tents", second) for t, _, _, _ in watch.got), what="next intent")
        assert log.read_text().count("the broker refused the message") == 1
        assert len(json.loads(vrmbox("status", "--json", data_dir=data).stdout)["refused"]) == 1
        events = [e["event_type"] for e in json.loads(vrmbox("audit", "show", "--limit", "500", "--json",
                                                             data_dir=data).stdout)["entries"]]
        assert events.count("outbox_refused") == 1
    finally:
        proc.stop()
        watch.close()


def test_market_and_home_as_two_brokers_the_whole_flow(tmp_path, broker, home, monkeypatch):
    """Vendors on the market broker, the box's local topics on the home broker: offer, accept,
    confirm, disclosure, revoke and the vendor's deletion receipt all work; the home broker
    carries the status and nothing of the market."""
    from processes import bike_vendor, vrm_vendor
    box_config(tmp_path, monkeypatch, f'[home_broker]\nurl = "{home.url}"\n')
    data = tmp_path / "box"
    vrmbox("profile", "set", "email", "ann@example.org", data_dir=data)
    local = Watcher(home, "#")
    vdir = tmp_path / "vendor-acme"
    procs = [daemon(data, broker.url, tmp_path / "daemon.log").start(),
             bike_vendor(tmp_path, broker.url, "acme").start()]
    try:
        vrmbox("intent", "add", "bikes", "--json", data_dir=data)
        offer = wait_for(lambda: json.loads(vrmbox("offers", "--json", data_dir=data).stdout),
                         timeout=60, what="the vendor's offer through the market broker")[0]["offer"]
        agreement = json.loads(vrmbox("offer", "accept", "--fields", "email", "--json", "--", offer,
                                      data_dir=data).stdout)["agreement"]
        vrmbox("agreement", "confirm", "--", agreement, data_dir=data)
        got = wait_for(lambda: json.loads(vrm_vendor("disclosures", "--dir", str(vdir), "--json").stdout),
                       timeout=30, what="the disclosure")
        assert [d["fields"] for d in got] == [{"email": "ann@example.org"}]
        vrmbox("revoke", "--", agreement, data_dir=data)
        wait_for(lambda: next(a for a in json.loads(vrmbox("agreements", "--json", data_dir=data).stdout)
                              if a["agreement"] == agreement)["revocation"] == "acknowledged",
                 timeout=30, what="the vendor's deletion receipt")
        assert json.loads(vrm_vendor("disclosures", "--dir", str(vdir), "--json").stdout) == []
        local.barrier("zz/test/barrier")
        on_home = {t for t, p, _, _ in local.got if p and not t.startswith("zz/")}
        assert on_home and all(t.startswith(f"{topics.PREFIX}/status/") for t in on_home), on_home
    finally:
        for p in reversed(procs):
            p.stop()
        local.close()
