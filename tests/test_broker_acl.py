"""The home broker `vrmbox provision` configures, against real clients: TLS, passwords, and an
ACL under which each account uses only its own topics. "Cannot read" is shown without timing:
the box publishes a sentinel, an allowed subscriber receives it, then the denied subscriber is
checked to have nothing (the MQTT 5 PUBACK reason code says a publish was refused)."""
from __future__ import annotations

import pytest

from provisioned import Client, box_credentials, layout, new_root, provision, remove_root, vrmbox
from provisioning.launch import Broker, free_port
from vrm_protocol import topics

pytestmark = pytest.mark.timeout(180)

NOT_AUTHORIZED = 135
INTENT = "intent-0123456789ab"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = new_root()
    try:
        port = free_port()
        p = provision(root, port)
        assert p.returncode == 0, p.stderr
        lay = layout(root)
        passwords = {}
        for slug in ("acme", "bobs-bikes"):
            out = root / f"{slug}.password"
            p = vrmbox("broker", "add-vendor", slug, "--root", str(root), "--out", str(out))
            assert p.returncode == 0, p.stderr
            passwords[slug] = out.read_text().strip()
        broker = Broker(tmp_path_factory.mktemp("acl-broker"), conf=lay.broker_conf).start()
        yield broker, lay, passwords
        broker.stop()
    finally:
        remove_root(root)


def barrier(publisher: Client, topic: str, reader: Client) -> None:
    """Publish on a topic `reader` may read and wait until it arrives: Mosquitto delivers one
    publisher's messages to a subscriber in order, so anything published before that reader was
    allowed to see would have arrived first."""
    payload = f"barrier-{len(reader.messages)}".encode()
    assert reader.subscribe(topic) in (0, 1)
    assert publisher.publish(topic, payload) == 0
    reader.wait(lambda: reader.got(topic, payload), f"barrier on {topic}")


@pytest.fixture
def clients(home):
    broker, lay, passwords = home
    made: list[Client] = []

    def make(name: str, username: str | None = None, password: str | None = None) -> Client:
        c = Client(broker.host, broker.port, lay.pem("ca"), username, password, name=name)
        made.append(c)
        return c

    def box() -> Client:
        c = make("box", *box_credentials(lay))
        assert c.connect() == 0
        return c

    def vendor(slug: str) -> Client:
        c = make(slug, slug, passwords[slug])
        assert c.connect() == 0
        return c
    yield make, box, vendor
    for c in made:
        c.close()


def test_anonymous_and_wrong_passwords_are_refused(clients, home):
    make, box, vendor = clients
    assert make("anon").connect() != 0
    assert make("wrong", "acme", "not-the-password").connect() != 0
    assert make("box-wrong", box_credentials(home[1])[0], "guess").connect() != 0
    assert make("box-right", *box_credentials(home[1])).connect() == 0    # the right password works


def test_a_vendor_cannot_read_another_vendors_inbox_or_disclosures(clients):
    make, box, vendor = clients
    b, acme, bob = box(), vendor("acme"), vendor("bobs-bikes")
    # Mosquitto 2.0 grants a SUBACK for any filter and applies the ACL to each message
    acme.subscribe(topics.disclosures("bobs-bikes"))
    acme.subscribe(topics.vendor_inbox("+"))
    assert bob.subscribe(topics.vendor_inbox("bobs-bikes")) in (0, 1)
    for topic in (topics.disclosures("bobs-bikes"), topics.agreements("bobs-bikes"),
                  topics.revocations("bobs-bikes")):
        b.publish(topic, b"sentinel-for-bob")
        bob.wait(lambda: bob.got(topic, b"sentinel-for-bob"), f"bob's {topic}")
    barrier(b, topics.intent("bikes", INTENT), acme)
    assert [t for t, _ in acme.messages] == [topics.intent("bikes", INTENT)]


def test_no_vendor_reads_a_box_inbox(clients):
    make, box, vendor = clients
    b, acme, bob = box(), vendor("acme"), vendor("bobs-bikes")
    acme.subscribe(topics.box_inbox(INTENT))
    acme.subscribe(topics.box_inbox("+"))
    assert b.subscribe(topics.box_inbox(INTENT)) in (0, 1)
    for topic in (topics.offers(INTENT), topics.countersignatures(INTENT), topics.revocation_acks(INTENT)):
        assert bob.publish(topic, b"offer-from-bob") == 0
        b.wait(lambda: b.got(topic, b"offer-from-bob"), f"box gets {topic}")
    barrier(bob, topics.vendor_profile("bobs-bikes"), acme)
    assert [t for t, _ in acme.messages] == [topics.vendor_profile("bobs-bikes")]


def test_a_vendor_cannot_publish_intents_or_another_vendors_profile(clients):
    make, box, vendor = clients
    b, acme, bob = box(), vendor("acme"), vendor("bobs-bikes")
    assert bob.subscribe(topics.intents("bikes")) in (0, 1)
    assert b.subscribe(topics.vendor_profiles()) in (0, 1)
    forged_intent = topics.intent("bikes", "forged-by-acme-01")
    assert acme.publish(forged_intent, b"forged") == NOT_AUTHORIZED
    assert acme.publish(topics.withdrawal("bikes", INTENT), b"forged") == NOT_AUTHORIZED
    assert acme.publish(topics.vendor_profile("bobs-bikes"), b"forged-profile") == NOT_AUTHORIZED
    assert acme.publish(topics.disclosures("bobs-bikes"), b"forged") == NOT_AUTHORIZED
    # sentinels from the accounts allowed to publish there arrive; the forgeries never did
    real = topics.intent("bikes", "real-intent-0001")
    b.publish(real, b"real")
    bob.wait(lambda: bob.got(real, b"real"), "the box's intent")
    assert acme.publish(topics.vendor_profile("acme"), b"acme-profile") == 0
    b.wait(lambda: b.got(topics.vendor_profile("acme"), b"acme-profile"), "acme's own profile")
    assert not bob.got(forged_intent, b"forged")
    assert not b.got(topics.vendor_profile("bobs-bikes"), b"forged-profile")


def test_the_box_and_vendors_can_do_their_jobs(clients):
    """Intents (also through a shared subscription), offers, vendor inboxes, withdrawals."""
    make, box, vendor = clients
    b, acme = box(), vendor("acme")
    assert acme.subscribe(topics.intents("bikes", share_group="acme-workers")) in (0, 1)
    assert acme.subscribe(topics.withdrawals("bikes")) in (0, 1)
    assert acme.subscribe(topics.vendor_inbox("acme")) in (0, 1)
    assert b.subscribe(topics.box_inbox(INTENT)) in (0, 1)
    assert b.publish(topics.intent("bikes", INTENT), b"intent") == 0
    acme.wait(lambda: acme.got(topics.intent("bikes", INTENT), b"intent"), "intent (shared sub)")
    assert acme.publish(topics.offers(INTENT), b"offer") == 0
    b.wait(lambda: b.got(topics.offers(INTENT), b"offer"), "offer")
    assert b.publish(topics.agreements("acme"), b"agreement") == 0
    acme.wait(lambda: acme.got(topics.agreements("acme"), b"agreement"), "agreement")
    assert b.publish(topics.withdrawal("bikes", INTENT), b"gone") == 0
    acme.wait(lambda: acme.got(topics.withdrawal("bikes", INTENT), b"gone"), "withdrawal")


def test_no_vendor_reads_the_boxs_availability(clients):
    """The status topic would tie a box's intents together after a restart."""
    make, box, vendor = clients
    b, acme = box(), vendor("acme")
    acme.subscribe(topics.availability("+"))
    watcher = box()
    assert watcher.subscribe(topics.availability("+")) in (0, 1)
    b.publish(topics.availability("box-0123456789abcdef"), b"online")
    watcher.wait(lambda: watcher.got(topics.availability("box-0123456789abcdef"), b"online"), "box sees it")
    barrier(b, topics.intent("bikes", INTENT), acme)
    assert [t for t, _ in acme.messages] == [topics.intent("bikes", INTENT)]
