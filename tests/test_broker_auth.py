"""The daemon over TLS with a username and password, as a real deployment runs it; anonymous
and wrong-password clients are refused by the broker the project configures."""
from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from broker import Broker
from processes import daemon, vrmbox, wait_for
from vrm_protocol import topics

pytestmark = pytest.mark.timeout(120)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(d):
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vrmbox test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"cafile": d / "ca.pem", "certfile": d / "server.pem", "keyfile": d / "server.key"}
    files["cafile"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["certfile"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["keyfile"].write_bytes(_pem(key))
    return files


@pytest.fixture
def secure_broker(tmp_path):
    pki = make_pki(tmp_path)
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "box", "s3cret-box"], check=True)
    pw.chmod(0o600)
    b = Broker(tmp_path / "broker", password_file=pw, tls=pki)
    b.start()
    yield b, pki
    b.stop()


def _try(broker, pki, username=None, password=None) -> int:
    """Connect reason: 0 when accepted."""
    result = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(pki["cafile"]), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if username:
        c.username_pw_set(username, password)
    c.on_connect = lambda cl, u, f, rc, p: result.setdefault("rc", rc.value)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        wait_for(lambda: "rc" in result, timeout=10, what="CONNACK")
    finally:
        c.loop_stop()
        c.disconnect()
    return result["rc"]


def test_broker_refuses_anonymous_and_wrong_password(secure_broker):
    broker, pki = secure_broker
    assert _try(broker, pki) != 0
    assert _try(broker, pki, "box", "wrong") != 0
    assert _try(broker, pki, "box", "s3cret-box") == 0


def test_daemon_connects_with_tls_and_password_file(secure_broker, tmp_path, monkeypatch):
    broker, pki = secure_broker
    secret = tmp_path / "broker-password"
    secret.write_text("s3cret-box\n")
    secret.chmod(0o600)
    cfg = tmp_path / "vrmbox.toml"
    cfg.write_text(f'[broker]\nurl = "{broker.url}"\nusername = "box"\n'
                   f'password_file = "{secret}"\nca_file = "{pki["cafile"]}"\n')
    monkeypatch.setenv("VRMBOX_CONFIG", str(cfg))
    data = tmp_path / "box"
    proc = daemon(data, broker.url, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: json.loads(vrmbox("status", "--json", data_dir=data).stdout)["connected"],
                 what="daemon connected over TLS")
        intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        got = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(pki["cafile"]))
        c.username_pw_set("box", "s3cret-box")
        c.on_message = lambda cl, u, m: got.append(m.topic)
        c.connect(broker.host, broker.port)
        c.subscribe(topics.intents("bikes"), qos=1)
        c.loop_start()
        wait_for(lambda: topics.intent("bikes", intent) in got, what="intent over TLS")
        c.loop_stop()
        c.disconnect()
    finally:
        proc.stop()
    assert "s3cret-box" not in (tmp_path / "daemon.log").read_text()
