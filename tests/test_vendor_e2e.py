"""End to end: `vrm-vendor` as real processes against a real Mosquitto, the box played by test code.

Done-when of the foundation issue: a vendor-kit process answers an intent with a signed offer
the protocol module accepts, and the whole agreement -> countersignature -> disclosure ->
revocation -> ack walk works, with the disclosed data really gone at the end. Plus: shared
subscriptions split intents between workers without answering any intent twice.
"""
from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vrm_protocol import (Agreement, Countersignature, Disclosure, Identity, Intent, Offer,
                          Revocation, RevocationAck, Terms, VendorProfile, encrypt_json, new_id, seal, sign, token_hash,
                          topics, verify)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
TERMS = Terms(id="vrm-basic-1", sha256=token_hash("the person's terms"))
CATALOGUE = """
currency: EUR
region: GB-LND
accept_terms: [vrm-basic-1]
offer_validity_s: 3600
items:
  - {category: bikes, name: City bike, sku: BK-1, price: 400, delivery_days: 3}
  - {category: bikes, name: Cargo bike, sku: BK-2, price: 700}
  - {category: bikes, name: E-bike, sku: BK-3, price: 2500}
  - {category: tents, name: Dome tent, sku: TN-1, price: 150}
rules:
  - when: {attribute: postcode_district, prefix: SW}
    add: 5
"""


# ------------------------------------------------------------------------------------ helpers
def vrm_vendor(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vendor_kit.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def ledger_json(kind: str, vendor_dir: Path) -> list[dict]:
    res = vrm_vendor(kind, "--dir", str(vendor_dir), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


CLAIMS_TOLD = """
import sys
from vendor_kit.cli import main
from vendor_kit.ledger import Ledger
claim = Ledger.claim
def telling(self, *args, **kwargs):
    print("CLAIMING", file=sys.stderr, flush=True)
    return claim(self, *args, **kwargs)
Ledger.claim = telling
sys.exit(main())
"""


class LogSignal(logging.Handler):
    """Set once `logger` logs a record whose message holds `text` (from any thread)."""

    def __init__(self, logger: str, text: str) -> None:
        super().__init__()
        self.logger, self.text, self.seen = logging.getLogger(logger), text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()

    def __enter__(self) -> "LogSignal":
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


class VendorProcess:
    """`vrm-vendor run` in its own process; waits for its READY line."""

    def __init__(self, vendor_dir: Path, broker, catalogue: Path, log: Path, *extra: str, verbose: bool = False,
                 tell_claims: bool = False) -> None:
        self.log = log
        self._logf = open(log, "ab")
        # tell_claims: the same `vrm-vendor`, writing CLAIMING to its log as it starts to write an
        # intent's answer to the ledger, so a test knows the worker holds the message.
        program = ["-c", CLAIMS_TOLD] if tell_claims else ["-m", "vendor_kit.cli"]
        self.proc = subprocess.Popen(
            [sys.executable, *program, *(["-v"] if verbose else []), "run", "--dir", str(vendor_dir),
             "--broker", broker.url, "--catalogue", str(catalogue), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._logf, text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self._lines.put(line.strip())

    def wait_ready(self, timeout: float = 15) -> None:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"vendor not READY in {timeout}s:\n{self.log.read_text()[-3000:]}")
        assert line == "READY", line

    def terminate(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._logf.close()


class Box:
    """The box's side, played by a paho MQTT 5 client collecting everything it receives."""

    def __init__(self, broker, *subscriptions: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"box-{new_id()}",
                                  protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port, clean_start=True)
        self.client.loop_start()
        self.client.subscribe([(s, 1) for s in subscriptions])
        assert subscribed.wait(5), "box could not subscribe"

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False, expiry: int | None = None) -> None:
        props = Properties(PacketTypes.PUBLISH)
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        self.client.publish(topic, payload, qos=1, retain=retain, properties=props).wait_for_publish(5)

    def take(self, topic: str, timeout: float = 10) -> bytes:
        """The next message on `topic` (others received meanwhile are kept for later)."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing on {topic} within {timeout}s")
                try:
                    t, payload = self.messages.get(timeout=left)
                except queue.Empty:
                    continue
                if t == topic:
                    return payload
                kept.append((t, payload))
        finally:
            for item in kept:
                self.messages.put(item)

    def drain(self, quiet: float) -> list[tuple[str, bytes]]:
        """Everything that arrives until nothing has come for `quiet` seconds."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_intent(box: Box, *, retain: bool = True, attributes: dict | None = None) -> tuple[Identity, str, str]:
    """A fresh key per intent, retained with message expiry, as the box does it."""
    key, intent_id = Identity.generate(), new_id()
    body = Intent(intent=intent_id, category="bikes", terms=TERMS, description="a bike for commuting",
                  attributes=attributes or {"postcode_district": "SW1A", "budget_max": 800, "currency": "EUR"})
    token = sign(key, body, now=time.time(), ttl=600, msg_id=intent_id)
    box.publish(topics.intent("bikes", intent_id), token, retain=retain, expiry=600 if retain else None)
    return key, intent_id, token


@pytest.fixture
def vendor_setup(tmp_path):
    vendor_dir = tmp_path / "acme"
    res = vrm_vendor("init", "--dir", str(vendor_dir), "--vendor", "acme", "--name", "Acme Bikes",
                     "--categories", "bikes,tents", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(CATALOGUE)
    return vendor_dir, catalogue, info


# ------------------------------------------------------------------------------------ tests
def test_vendor_process_answers_intent_and_walks_the_agreement(broker, tmp_path, vendor_setup):
    vendor_dir, catalogue, info = vendor_setup
    did = info["did"]
    vendor = VendorProcess(vendor_dir, broker, catalogue, tmp_path / "vendor.log")
    box = None
    try:
        vendor.wait_ready()
        box = Box(broker, topics.vendor_profile("acme"), topics.box_inbox("+"))

        # 1. the retained, signed profile carries the did and the disclosure key
        profile = verify(box.take(topics.vendor_profile("acme")), now=time.time(), expect=VendorProfile)
        assert profile.envelope.iss == did and profile.body.categories == ["bikes", "tents"]
        assert profile.body.enc_key.as_jwk() == info["enc_key"]

        # garbage must be refused, logged, and survived
        box.publish(topics.intent("bikes", new_id()), b"definitely not a jws")
        box.publish(topics.agreements("acme"), b"x.y.z")

        # 2.-3. an intent, answered with one signed offer per item within budget (BK-3 is over)
        key, intent_id, _ = publish_intent(box)
        offers = [verify(box.take(topics.offers(intent_id)), now=time.time(), expect=Offer) for _ in range(2)]
        assert {o.envelope.iss for o in offers} == {did}
        by_sku = {o.body.item.sku: o for o in offers}
        assert set(by_sku) == {"BK-1", "BK-2"}
        offer = by_sku["BK-1"]
        assert offer.body.price == 405.0 and offer.body.intent == intent_id     # 400 + SW surcharge
        assert offer.body.terms_response.decision == "accept"
        assert offer.envelope.exp == offer.body.valid_until

        # 4.-5. agreement signed by the intent key, sealed to the vendor -> countersignature
        agreement_id = new_id()
        agreement_token = sign(key, Agreement(
            intent=intent_id, offer=offer.id, offer_hash=token_hash(offer.token), vendor="acme", vendor_did=did,
            terms=TERMS, fields=["name", "email", "address"], purpose="delivery", duration_days=30),
            now=time.time(), ttl=3600, msg_id=agreement_id)
        box.publish(topics.agreements("acme"), seal(agreement_token, profile.body.enc_key))
        cs = verify(box.take(topics.countersignatures(intent_id)), now=time.time(), expect=Countersignature)
        assert cs.envelope.iss == did and cs.body.agreement == agreement_id and cs.body.intent == intent_id
        assert cs.body.agreement_hash == token_hash(agreement_token)

        # 6.-7. disclosure encrypted to the profile's enc_key
        secret = {"name": "Zelda Q. Testperson", "email": "zelda-7731@example.org"}
        jwe = encrypt_json({"agreement": agreement_id, "fields": secret}, profile.body.enc_key)
        box.publish(topics.disclosures("acme"),
                    sign(key, Disclosure(agreement=agreement_id, intent=intent_id, jwe=jwe), now=time.time(), ttl=600))
        deadline = time.monotonic() + 10
        while not (shown := ledger_json("disclosures", vendor_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [d["fields"] for d in shown] == [secret]
        assert shown[0]["agreement"] == agreement_id
        agreements = ledger_json("agreements", vendor_dir)
        assert [(a["id"], a["fields"], a["sku"]) for a in agreements] == \
               [(agreement_id, ["name", "email", "address"], "BK-1")]

        # 8. revocation with delete -> signed ack, and the data is gone (rows and file bytes)
        revocation_id = new_id()
        box.publish(topics.revocations("acme"), seal(sign(key, Revocation(
            agreement=agreement_id, intent=intent_id, delete=True, reason="no longer needed"),
            now=time.time(), ttl=600, msg_id=revocation_id), profile.body.enc_key))
        ack = verify(box.take(topics.revocation_acks(intent_id)), now=time.time(), expect=RevocationAck)
        assert ack.envelope.iss == did
        assert (ack.body.agreement, ack.body.revocation, ack.body.deleted) == (agreement_id, revocation_id, True)
        assert ledger_json("disclosures", vendor_dir) == []
        assert ledger_json("agreements", vendor_dir)[0]["deleted"] is True
        raw = b"".join(p.read_bytes() for p in vendor_dir.glob("ledger.sqlite*"))
        assert b"Zelda" not in raw and b"zelda-7731" not in raw

        assert vendor.terminate() == 0
        log = vendor.log.read_text()
        assert f"refused message on {topics.PREFIX}/intents/bikes/" in log and ": bad_encoding: " in log
        assert f"refused message on {topics.PREFIX}/vendor/acme/agreements: bad_encryption" in log
        assert "Traceback" not in log
    finally:
        vendor.kill()
        if box:
            box.close()


def test_restart_does_not_answer_again_and_broker_loss_is_survived(broker, tmp_path, vendor_setup):
    vendor_dir, catalogue, _ = vendor_setup
    box = Box(broker, topics.offers("+"))
    vendor = VendorProcess(vendor_dir, broker, catalogue, tmp_path / "v1.log")
    try:
        vendor.wait_ready()
        _, first, _ = publish_intent(box)             # retained: comes back on every (re)subscribe
        assert len([t for t, _ in box.drain(1.5)]) == 2
        assert vendor.terminate() == 0

        # a named worker keeps a persistent session ...
        vendor = VendorProcess(vendor_dir, broker, catalogue, tmp_path / "v2.log", "--client-id", "acme-1")
        vendor.wait_ready()
        assert box.drain(1.0) == []                    # the retained intent is not answered twice
        assert vendor.terminate() == 0
        # ... so what is sent while it is down is queued by the broker, not lost
        _, second, _ = publish_intent(box, retain=False)
        vendor = VendorProcess(vendor_dir, broker, catalogue, tmp_path / "v3.log", "--client-id", "acme-1")
        vendor.wait_ready()
        assert [t for t, _ in box.drain(1.5)] == [topics.offers(second)] * 2

        # broker loss: the worker reconnects and resubscribes by itself
        box.close()
        broker.restart()
        deadline = time.monotonic() + 15
        while vendor.log.read_text().count("subscribed to") < 2:
            assert time.monotonic() < deadline, "vendor did not resubscribe after broker restart"
            time.sleep(0.1)
        box = Box(broker, topics.offers("+"))
        _, third, _ = publish_intent(box, retain=False)
        assert [t for t, _ in box.drain(1.5)] == [topics.offers(third)] * 2
        assert "reconnecting" in vendor.log.read_text()
        assert sorted(i["intent"] for i in ledger_json("intents", vendor_dir)) == sorted([first, second, third])
        assert vendor.terminate() == 0
    finally:
        vendor.kill()
        box.close()


def test_shared_subscription_splits_intents_without_double_answers(broker, tmp_path, vendor_setup):
    vendor_dir, catalogue, info = vendor_setup
    box = Box(broker, topics.offers("+"))
    # Retained before the group subscribes: MQTT 5 does not send it to shared subscriptions, so
    # the workers also read intents with a plain subscription (answered once all the same).
    _, early, _ = publish_intent(box)
    workers = [VendorProcess(vendor_dir, broker, catalogue, tmp_path / f"w{n}.log", "--share-group", "g",
                             "--client-id", f"acme-w{n}", verbose=True) for n in (1, 2)]
    try:
        for w in workers:
            w.wait_ready()
        n = 40
        intent_ids = {publish_intent(box, retain=False)[1] for _ in range(n)}
        per_intent: dict[str, list[str]] = defaultdict(list)
        deadline = time.monotonic() + 30
        while sum(len(v) for v in per_intent.values()) < 2 * n and time.monotonic() < deadline:
            for topic, payload in box.drain(0.3):
                offer = verify(payload, now=time.time(), expect=Offer)
                assert offer.envelope.iss == info["did"] and topic == topics.offers(offer.body.intent)
                per_intent[offer.body.intent].append(offer.id)
        for topic, payload in box.drain(1.0):           # anything late would be a double answer
            per_intent[verify(payload, now=time.time()).body.intent].append("late")
        assert set(per_intent) == intent_ids | {early}
        assert all(len(ids) == 2 and len(set(ids)) == 2 for ids in per_intent.values()), \
            {k: v for k, v in per_intent.items() if len(v) != 2}
        # a live intent reaches one worker only: the plain subscription leaves it to the shared one
        logs = "".join(w.log.read_text() for w in workers)
        assert not any(f"intent {i} already handled" in logs or f"intent {i} claimed by" in logs for i in intent_ids)

        intents = ledger_json("intents", vendor_dir)
        assert len(intents) == n + 1 and {i["intent"] for i in intents} == intent_ids | {early}
        intents = [i for i in intents if i["intent"] != early]
        by_worker = defaultdict(int)
        for i in intents:
            by_worker[i["client_id"]] += 1
        assert set(by_worker) == {"acme-w1", "acme-w2"}, by_worker   # both did part of the work
        offers = ledger_json("offers", vendor_dir)
        assert len(offers) == 2 * (n + 1) and all(o["sent"] for o in offers)
        for w in workers:
            assert w.terminate() == 0
    finally:
        for w in workers:
            w.kill()
        box.close()


# ------------------------------------------------------------------------------------ review fixes
class InProcessVendor:
    """A VendorWorker on a thread of the test (for tests that tune its timers or its ledger)."""

    def __init__(self, tmp_path: Path, broker, *, client_id: str = "acme-in-process", busy_timeout_s: float = 30.0,
                 share_group: str | None = None) -> None:
        from vendor_kit import BrokerSettings, Catalogue, Ledger, VendorIdentity, VendorWorker
        self.dir = tmp_path / "acme-inproc"
        self.identity = VendorIdentity.create(self.dir, "acme", "Acme Bikes", ["bikes", "tents"])
        (tmp_path / "inproc.yaml").write_text(CATALOGUE)
        self.ledger = Ledger.in_dir(self.dir)
        self.ledger.busy_timeout_s = busy_timeout_s
        if busy_timeout_s < 1:   # also SQLite's own wait: any "database is locked" must not lose a message
            self.ledger._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        ready = threading.Event()
        self.worker = VendorWorker(self.identity, Catalogue.load(tmp_path / "inproc.yaml"), self.ledger,
                                   BrokerSettings(host=broker.host, port=broker.port, client_id=client_id,
                                                  share_group=share_group),
                                   on_ready=ready.set)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "in-process vendor not ready"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.ledger.close()


def _agreement_for(box: Box, key: Identity, intent_id: str, did: str, enc_key) -> tuple[str, str]:
    """(sealed agreement token, agreement id)."""
    offer = verify(box.take(topics.offers(intent_id)), now=time.time(), expect=Offer)
    agreement_id = new_id()
    token = sign(key, Agreement(intent=intent_id, offer=offer.id, offer_hash=token_hash(offer.token), vendor="acme",
                                vendor_did=did, terms=TERMS, fields=["name"], purpose="delivery", duration_days=30),
                 now=time.time(), ttl=3600, msg_id=agreement_id)
    return seal(token, enc_key), agreement_id


def test_item1_sigterm_while_the_ledger_is_locked_exits_fast_and_keeps_the_message(broker, tmp_path, vendor_setup):
    """Another process holds the ledger's write lock while an intent arrives: SIGTERM must not
    wait for SQLite, and the intent, never acknowledged, comes back to the restarted worker."""
    import sqlite3
    vendor_dir, catalogue, _ = vendor_setup
    box = Box(broker, topics.offers("+"))
    vendor = VendorProcess(vendor_dir, broker, catalogue, tmp_path / "v1.log", "--client-id", "acme-1",
                           tell_claims=True)
    locker = None
    try:
        vendor.wait_ready()
        locker = sqlite3.connect(vendor_dir / "ledger.sqlite", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        _, intent_id, _ = publish_intent(box, retain=False)
        deadline = time.monotonic() + 10                  # the worker now waits for the lock
        while "CLAIMING" not in vendor.log.read_text():
            assert time.monotonic() < deadline, "the worker never started to store the intent"
            time.sleep(0.05)
        started = time.monotonic()
        assert vendor.terminate(timeout=4) == 0
        assert time.monotonic() - started < 3
        locker.execute("ROLLBACK")
        assert box.drain(0.3) == []
        vendor = VendorProcess(vendor_dir, broker, catalogue, tmp_path / "v2.log", "--client-id", "acme-1")
        vendor.wait_ready()
        assert [t for t, _ in box.drain(1.5)] == [topics.offers(intent_id)] * 2
        assert vendor.terminate() == 0
        assert "Traceback" not in (tmp_path / "v1.log").read_text() + vendor.log.read_text()
    finally:
        vendor.kill()
        box.close()
        if locker:
            locker.close()


def test_item7_housekeeping_runs_on_an_idle_connection(broker, tmp_path, monkeypatch):
    from vendor_kit import Ledger, worker as worker_module
    monkeypatch.setattr(worker_module, "HOUSEKEEPING_S", 0.3)
    monkeypatch.setattr(worker_module, "PROFILE_REFRESH_S", 0.5)
    box = Box(broker, topics.vendor_profile("acme"), topics.offers("+"))
    vendor = InProcessVendor(tmp_path, broker)
    try:
        assert box.take(topics.vendor_profile("acme"))
        # another worker committed offers ages ago and died before publishing them
        from vendor_kit import core
        key, intent_id = Identity.generate(), new_id()
        token = sign(key, Intent(intent=intent_id, category="bikes", terms=TERMS), now=time.time(), ttl=600,
                     msg_id=intent_id)
        answer = core.answer_intent(verify(token, now=time.time(), expect=Intent), topics.intent("bikes", intent_id),
                                    vendor.identity, vendor.worker.catalogue, time.time())
        with Ledger.in_dir(vendor.dir, client_id="acme-dead") as other:
            assert other.claim_intent(answer, int(time.time()) - 60)
        # nothing is sent to the worker, yet it refreshes its profile and re-sends the orphans
        assert box.take(topics.vendor_profile("acme"), timeout=3)
        assert {verify(box.take(topics.offers(intent_id), timeout=3), now=time.time()).id for _ in range(3)} == \
               {o.id for o in answer.offers}
    finally:
        vendor.close()
        box.close()


def test_item8_and_item2_repeats_are_answered_again_and_the_ack_waits_for_the_purge(broker, tmp_path):
    import sqlite3
    vendor = InProcessVendor(tmp_path, broker)
    box = Box(broker, topics.box_inbox("+"))
    did = vendor.identity.did
    try:
        key, intent_id, _ = publish_intent(box)
        agreement_token, agreement_id = _agreement_for(box, key, intent_id, did, vendor.identity.enc_key)
        box.publish(topics.agreements("acme"), agreement_token)
        first = box.take(topics.countersignatures(intent_id))
        box.publish(topics.agreements("acme"), agreement_token)       # the box did not get it: same token again
        assert box.take(topics.countersignatures(intent_id)) == first

        jwe = encrypt_json({"agreement": agreement_id, "fields": {"name": "Quentin Purgeable-4410"}},
                           vendor.identity.enc_key)
        box.publish(topics.disclosures("acme"),
                    sign(key, Disclosure(agreement=agreement_id, intent=intent_id, jwe=jwe), now=time.time(), ttl=600))
        deadline = time.monotonic() + 5
        while not vendor.ledger.list_disclosures():
            assert time.monotonic() < deadline
            time.sleep(0.05)

        reader = sqlite3.connect(vendor.dir / "ledger.sqlite", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM intents").fetchone()     # e.g. `vrm-vendor disclosures` running
        revocation = seal(sign(key, Revocation(agreement=agreement_id, intent=intent_id, delete=True),
                               now=time.time(), ttl=600), vendor.identity.enc_key)
        with LogSignal("vendor_kit.worker", "held: a reader blocks the WAL truncation") as held:
            box.publish(topics.revocations("acme"), revocation)
            assert held.seen.wait(10), "the worker never held the ack"
        assert topics.revocation_acks(intent_id) not in [t for t, _ in box.drain(0.2)]   # no "deleted: true"
        assert b"Purgeable-4410" in b"".join(p.read_bytes() for p in vendor.dir.glob("ledger.sqlite*"))
        reader.execute("COMMIT")
        reader.close()
        ack = verify(box.take(topics.revocation_acks(intent_id), timeout=5), now=time.time(), expect=RevocationAck)
        assert ack.body.deleted is True
        assert b"Purgeable-4410" not in b"".join(p.read_bytes() for p in vendor.dir.glob("ledger.sqlite*"))
        box.publish(topics.revocations("acme"), revocation)          # repeated: the same ack again
        assert verify(box.take(topics.revocation_acks(intent_id)), now=time.time()).id == ack.id
    finally:
        vendor.close()
        box.close()


def test_lesser_message_the_ledger_could_not_take_is_retried_not_dropped(broker, tmp_path):
    import sqlite3
    vendor = InProcessVendor(tmp_path, broker, busy_timeout_s=0.3)
    box = Box(broker, topics.offers("+"))
    locker = sqlite3.connect(vendor.dir / "ledger.sqlite", isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")                            # locked for longer than the worker waits
        with LogSignal("vendor_kit.worker", "kept for a retry") as kept:
            _, intent_id, _ = publish_intent(box, retain=False)
            assert kept.seen.wait(10), "the worker never gave up on the locked ledger"
        assert box.drain(0.2) == []
        locker.execute("ROLLBACK")
        assert [t for t, _ in box.drain(1.5)] == [topics.offers(intent_id)] * 2
        assert [i["intent"] for i in vendor.ledger.list_intents()] == [intent_id]
    finally:
        locker.close()
        vendor.close()
        box.close()
