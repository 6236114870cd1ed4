"""docs/protocol.md and the code cannot drift: §13 lists exactly the reason codes the protocol
module and the box report, and the box reports failures in the order §11.2 states."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from device.intake import INTAKE_REASONS, Intake, Pre, Rejection
from device.market import Market
from device.ratelimit import RateLimiter
from device.store import Store
from vrm_protocol import REASONS, Identity, sign, topics
from vrm_protocol.messages import VERSION

from tests.vendor_messages import TestVendor

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")


def section(title_start: str) -> str:
    start = DOC.index(title_start)
    nxt = re.search(r"^#{2,3} ", DOC[start + len(title_start):], re.M)
    return DOC[start:start + len(title_start) + (nxt.start() if nxt else len(DOC))]


def table_codes(text: str) -> list[str]:
    return re.findall(r"^\| `([a-z_]+)` \|", text, re.M)


def test_the_doc_is_for_this_version():
    assert DOC.startswith(f"# VRM protocol v{VERSION}\n")
    assert f"tests/vectors/v{VERSION}.json" in DOC and f"vrm/v{VERSION}/" in DOC


def test_section_13_lists_every_reason_code_once():
    text = section("## 13. Reason codes")
    protocol_table, box_table = text.split("Reported by the box on top")
    assert sorted(table_codes(protocol_table)) == sorted(REASONS)
    assert sorted(table_codes(box_table)) == sorted(INTAKE_REASONS)
    assert not set(REASONS) & set(INTAKE_REASONS)


# The order §11.2 states for a message on the box's inbox (first mention of each code).
# A kid no pinned vendor has is unknown_vendor before its signature is checked (tests/test_box_vectors.py).
INBOX_ORDER = ["oversize", "unknown_topic", "unknown_intent", "intent_closed", "bad_encoding", "bad_json",
               "bad_alg", "bad_header", "bad_did", "rate_limited", "unknown_vendor", "vendor_key_changed",
               "blocked_vendor", "too_many_offers", "bad_signature", "expired", "replay", "topic_mismatch",
               "vendor_mismatch", "terms_mismatch", "unknown_agreement", "wrong_state", "store_error"]


def test_section_11_2_states_the_order_the_box_checks():
    text = section("### 11.2 The order the box checks and reports").split("For a profile on")[0]
    seen: list[str] = []
    for code in re.findall(r"`([a-z_]+)`", text):
        if code in set(REASONS) | set(INTAKE_REASONS) and code not in seen:
            seen.append(code)
    assert seen == INBOX_ORDER


@pytest.fixture
def box(tmp_path):
    store = Store.open(tmp_path / "b")
    market = Market(store)
    intake = Intake(market, limiter=RateLimiter(60, 20), max_bytes=65536, clock=time.time,
                    max_offers_per_vendor_intent=1)
    iid = market.add_intent("bikes", {})["intent"]
    intake.refresh()
    yield intake, iid, store.get_intent(iid).token, market
    store.close()


def first_failure(intake, topic, payload):
    pre = intake.precheck(topic, payload.encode() if isinstance(payload, str) else payload)
    out = intake.handle(pre) if isinstance(pre, Pre) else pre
    assert isinstance(out, Rejection), out
    return out.reason


def test_when_two_checks_fail_the_box_reports_the_earlier(box):
    intake, iid, token, market = box
    acme = TestVendor("acme")
    intake.handle(intake.precheck(topics.vendor_profile("acme"), acme.profile().encode()))
    h, p, _ = acme.offer(token).split(".")
    _, _, forged = sign(Identity.generate(), acme.offer_body(token), now=time.time(), ttl=3600).split(".")
    bad_sig = f"{h}.{p}.{forged}"
    other = market.add_intent("bikes", {})["intent"]
    intake.refresh()
    pairs = [  # (message, topic) failing two checks -> the one §11.2 states first
        (b"\xff", topics.offers("Zz" * 8), "unknown_intent"),                       # < bad_encoding
        (bad_sig, topics.offers(other), "bad_signature"),                            # < topic_mismatch
        (acme.offer(token, now=time.time() - 7200, ttl=600), topics.offers(other), "expired"),
    ]
    for payload, topic, want in pairs:
        assert first_failure(intake, topic, payload) == want
    assert intake.handle(intake.precheck(topics.offers(iid), acme.offer(token).encode())).kind == "offer"
    assert first_failure(intake, topics.offers(iid), bad_sig) == "too_many_offers"       # < bad_signature
    market.set_vendor_status("acme", "blocked")
    intake.refresh()
    assert first_failure(intake, topics.offers(other), bad_sig) == "blocked_vendor"      # < bad_signature
