"""The broker fixture speaks MQTT 5 and does not drop queued QoS 1 messages past 1000."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
import pytest

from provisioning.launch import ROOT, child_env


def _client(broker, client_id, clean_start=True):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
    return c


def test_offline_subscriber_gets_more_than_default_queue_limit(broker):
    """Mosquitto's default would drop everything past 1000 queued messages; our config must not."""
    n = 2500
    topic = f"t/{uuid.uuid4().hex}"
    got: list[bytes] = []
    done = threading.Event()

    sub = _client(broker, "sub-1")
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    time.sleep(0.3)
    sub.disconnect()
    sub.loop_stop()

    pub = _client(broker, "pub-1")
    pub.loop_start()
    for i in range(n):
        pub.publish(topic, str(i).encode(), qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()

    def on_message(c, u, msg):
        got.append(msg.payload)
        if len(got) >= n:
            done.set()

    sub = _client(broker, "sub-1", clean_start=False)
    sub.on_message = on_message
    sub.loop_start()
    done.wait(30)
    sub.disconnect()
    sub.loop_stop()
    assert sorted(int(x) for x in got) == list(range(n))


def _retained_survives_restart(broker) -> bytes | None:
    """Publish a retained message, restart the broker (SIGTERM saves), read it back."""
    topic = f"t/{uuid.uuid4().hex}"
    pub = _client(broker, "keeper")
    pub.loop_start()
    pub.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    broker.restart()
    got: list[bytes] = []
    arrived = threading.Event()

    def on_message(c, u, msg):
        got.append(msg.payload)
        arrived.set()
    sub = _client(broker, "reader")
    sub.on_message = on_message
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    arrived.wait(10)
    sub.disconnect()
    sub.loop_stop()
    return got[0] if got else None


def _uid_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return int(line.split()[2])          # effective uid
    raise AssertionError("no Uid line")


def test_persistence_is_written_by_the_account_mosquitto_runs_as(broker):
    """Started as root, Mosquitto drops to an unprivileged account; it must still save."""
    uid = _uid_of(broker.proc.pid)
    if os.geteuid() == 0:
        assert uid != 0
    else:
        assert uid == os.geteuid()
    assert _retained_survives_restart(broker) == b"kept"
    db = broker.workdir / "data" / "mosquitto.db"
    assert db.stat().st_uid == uid
    assert "Permission denied" not in broker.log.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as an ordinary user")
def test_broker_launcher_works_for_an_ordinary_user(tmp_path):
    """The same launcher, run by an ordinary account (nobody), in a folder that account owns."""
    home = Path(tempfile.mkdtemp(prefix="vrm-nobody-"))
    try:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        script = (
            "import sys, pathlib\n"
            "from provisioning.launch import Broker\n"
            "sys.path.insert(0, 'tests')\n"
            "import test_broker_fixture as t\n"
            "b = Broker(pathlib.Path(sys.argv[1]) / 'b').start()\n"
            "try:\n"
            "    print(t._uid_of(b.proc.pid), t._retained_survives_restart(b))\n"
            "finally:\n"
            "    b.stop()\n")
        env = child_env()
        env["HOME"] = str(home)
        # util-linux's setpriv: Popen(user=...) cannot exec a Python that lives under /root
        p = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                            "--clear-groups", sys.executable, "-c", script, str(home)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == [str(nobody.pw_uid), "b'kept'"]
        assert "Permission denied" not in (home / "b" / "mosquitto.log").read_text()
    finally:
        shutil.rmtree(home)
