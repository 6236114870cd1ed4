"""The broker fixture speaks MQTT 5 and does not drop queued QoS 1 messages past 1000."""
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


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
