"""The whole system as separate processes on a real broker: the box daemon, three vendor-kit
workers, the `vrmbox` CLI as the person. intent -> offers from three vendors -> ranked by the
person's rules with explanations -> accept -> confirm on the box -> countersignature ->
disclosure the vendor decrypts holds exactly the agreed fields -> revoke -> the vendor deletes
and acknowledges. The audit log verifies after every step."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import pytest
import yaml

from vrm_protocol import topics
import processes
from processes import box_config, daemon, vendor, vrm_vendor, vrmbox, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]   # a daemon and three vendor processes

VENDORS = {  # slug -> (bike name, price, brand, delivery days)
    "alpha": ("Alpha Roadster", 650.0, "Alpha", 4),
    "beta": ("Beta City", 520.0, "Beta", 6),
    "gamma": ("Gamma Carbon", 980.0, "Gamma", 2),
}
RULES = {
    "version": 1,
    "filters": {"max_price": {"amount": 800, "currency": "EUR"}, "require_terms_accepted": True},
    "weights": {"price": 1.0, "known_supplier": 0, "reputation": 0, "delivery": 0,
                "brands_liked": 0, "brands_disliked": 0},
}


def audit_ok(data) -> None:
    out = vrmbox("audit", "verify", "--json", data_dir=data)
    assert json.loads(out.stdout)["ok"] is True, out.stdout


@pytest.fixture
def system(tmp_path, broker, monkeypatch):
    box_config(tmp_path, monkeypatch)
    data = tmp_path / "box"
    for name, value in (("email", "ann@example.org"), ("postal_address", "1 High St, London"),
                        ("phone", "+44 20 7946 0000")):
        vrmbox("profile", "set", name, value, data_dir=data)
    procs = [daemon(data, broker.url, tmp_path / "daemon.log").start()]
    for slug, (name, price, brand, days) in VENDORS.items():
        vdir = tmp_path / f"vendor-{slug}"
        vrm_vendor("init", "--dir", str(vdir), "--vendor", slug, "--name", slug.title(),
                   "--categories", "bikes")
        cat = tmp_path / f"{slug}.yaml"
        cat.write_text(yaml.safe_dump({
            "currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
            "items": [{"category": "bikes", "name": name, "sku": f"{slug}-1", "brand": brand,
                       "price": price, "delivery_days": days}]}))
        procs.append(vendor(vdir, broker.url, cat, tmp_path / f"vendor-{slug}.log").start())
    yield {"data": data, "tmp": tmp_path, "broker": broker}
    for p in reversed(procs):
        p.stop()


def test_intent_offers_rank_accept_disclose_revoke(system):
    data, tmp = system["data"], system["tmp"]
    rules = tmp / "rules.json"
    rules.write_text(json.dumps(RULES))
    vrmbox("rules", "set", str(rules), data_dir=data)
    intent = json.loads(vrmbox("intent", "add", "bikes", "--attr", "budget_max=1200",
                               "--attr", "postcode_district=N1", "--json", data_dir=data).stdout)["intent"]
    audit_ok(data)

    def offers(*extra):
        return json.loads(vrmbox("offers", f"--intent={intent}", "--json", *extra, data_dir=data).stdout)
    wait_for(lambda: len(offers("--all")) == 3, timeout=60, what="offers from three vendors")

    ranked = offers()
    assert [r["vendor"] for r in ranked] == ["beta", "alpha"]          # cheapest first, gamma > 800
    assert ranked[0]["score"] > ranked[1]["score"]
    assert set(ranked[0]["explanation"]["passed"]) >= {"max_price", "require_terms_accepted"}
    assert "price" in ranked[0]["explanation"]["contributions"]
    gamma = [r for r in offers("--all") if r["vendor"] == "gamma"][0]
    assert not gamma["eligible"] and any("max_price" in f for f in gamma["explanation"]["failed"])
    audit_ok(data)

    agreement = json.loads(vrmbox("offer", "accept", "--fields", "email,postal_address",
                                  "--purpose", "deliver the bike", "--days", "30", "--json",
                                  "--", ranked[0]["offer"], data_dir=data).stdout)["agreement"]

    def agreements():
        return {a["agreement"]: a for a in json.loads(vrmbox("agreements", "--json", data_dir=data).stdout)}
    assert agreements()[agreement]["status"] == "pending_confirmation"
    # nothing has reached the vendor before the press on the box
    beta_dir = str(tmp / "vendor-beta")
    assert json.loads(vrm_vendor("disclosures", "--dir", beta_dir, "--json").stdout) == []
    vrmbox("agreement", "confirm", "--", agreement, data_dir=data)
    wait_for(lambda: agreements()[agreement]["status"] == "active", timeout=30, what="countersignature")
    assert agreements()[agreement]["countersigned"] is True
    audit_ok(data)

    def disclosures():
        return json.loads(vrm_vendor("disclosures", "--dir", beta_dir, "--json").stdout)
    wait_for(lambda: disclosures(), timeout=30, what="vendor stored the disclosure")
    [d] = disclosures()
    assert d["fields"] == {"email": "ann@example.org", "postal_address": "1 High St, London"}
    for other in ("alpha", "gamma"):
        assert json.loads(vrm_vendor("disclosures", "--dir", str(tmp / f"vendor-{other}"),
                                     "--json").stdout) == []

    vrmbox("revoke", "--reason", "changed my mind", "--", agreement, data_dir=data)
    wait_for(lambda: agreements()[agreement]["revocation"] == "acknowledged", timeout=30,
             what="vendor acknowledged deletion")
    assert disclosures() == []
    audit_ok(data)
    events = [e["event_type"] for e in json.loads(vrmbox("audit", "show", "--json", "--limit", "1000",
                                                         data_dir=data).stdout)["entries"]]
    for e in ("intent_published", "offer_accepted", "agreement_signed", "agreement_confirmed",
              "agreement_countersigned", "data_disclosed", "agreement_revoked", "deletion_requested",
              "deletion_acknowledged"):
        assert e in events, e


def test_erase_while_running_tells_the_vendor_who_deletes(system):
    data, tmp = system["data"], system["tmp"]
    intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
    offers = wait_for(lambda: [r for r in json.loads(vrmbox("offers", f"--intent={intent}", "--json",
                                                            data_dir=data).stdout) if r["vendor"] == "alpha"],
                      timeout=60, what="alpha's offer")
    agreement = json.loads(vrmbox("offer", "accept", "--fields", "email", "--json", "--", offers[0]["offer"],
                                  data_dir=data).stdout)["agreement"]
    vrmbox("agreement", "confirm", "--", agreement, data_dir=data)
    alpha = str(tmp / "vendor-alpha")
    wait_for(lambda: json.loads(vrm_vendor("disclosures", "--dir", alpha, "--json").stdout), timeout=30,
             what="alpha holds the disclosure")
    # import/restore would swap keys under the running daemon: refused
    refused = vrmbox("restore", "--passphrase-file", "/dev/null", str(tmp / "nothing"), data_dir=data,
                     check=False)
    assert refused.returncode != 0 and "daemon is running" in refused.stdout + refused.stderr
    old_box = json.loads(vrmbox("status", "--json", data_dir=data).stdout)["box_id"]
    # erase waits for a press on the box; the button socket stands in for it here
    eraser = subprocess.Popen([sys.executable, "-m", "vrmbox", "erase", "--yes", "--json"],
                              env={**processes._env(), "VRMBOX_DATA_DIR": str(data)}, cwd=processes.ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = wait_for(lambda: json.loads(vrmbox("pending", "--json", data_dir=data).stdout)["requests"],
                    what="the erase request waiting for the press")
    assert [h["op"] for h in held] == ["erase"] and eraser.poll() is None
    assert json.loads(vrmbox("agreements", "--json", data_dir=data).stdout)   # nothing erased yet
    vrmbox("approve", held[0]["request"], data_dir=data)
    stdout, stderr = eraser.communicate(timeout=120)
    assert eraser.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["deletion_requests"] == 1
    wait_for(lambda: json.loads(vrm_vendor("disclosures", "--dir", alpha, "--json").stdout) == [],
             timeout=30, what="alpha deleted after the erase")
    assert json.loads(vrmbox("agreements", "--json", data_dir=data).stdout) == []
    assert json.loads(vrmbox("profile", "show", "--json", data_dir=data).stdout) in ({}, [])
    audit_ok(data)
    # the daemon carries on with the fresh store, under a new box id, and the old one's retained
    # status is gone from the broker
    status = wait_for(lambda: (s := json.loads(vrmbox("status", "--json", data_dir=data).stdout))["connected"]
                      and s, what="reconnected after erase")
    assert status["box_id"] != old_box
    assert json.loads(vrmbox("intent", "add", "tents", "--json", data_dir=data).stdout)["intent"]
    # no availability status on the market broker at all (only on a home broker): a retained
    # marker published after the daemon reconnected is the barrier for "nothing else is there"
    seen: dict[str, bytes] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: seen.__setitem__(m.topic, m.payload)
    c.connect(system["broker"].host, system["broker"].port)
    c.subscribe(topics.availability("+"), qos=1)
    # A barrier after the SUBSCRIBE on the same connection: every retained status is queued to
    # this client before the broker reads the marker, so once the marker is here, all of them are.
    marker = topics.availability("marker-" + uuid.uuid4().hex)
    c.publish(marker, b"marker", qos=1)
    c.loop_start()
    wait_for(lambda: marker in seen, what="the marker")
    c.loop_stop()
    c.disconnect()
    assert set(seen) == {marker}

