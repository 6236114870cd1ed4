"""docs/protocol.md says what the box and the vectors do on the points an implementer from the
document alone found unclear: how JSON depth is counted, the JWE header's members, a receipt's
list length, the terms an intent carries, stopping re-sends after a withdrawal, and where a
withdrawn intent's messages go."""
from __future__ import annotations

import json
from pathlib import Path

from device.market import Market
from device.store import Store
from vrm_protocol.codec import MAX_JSON_DEPTH, check_json_depth, unverified_payload

from tests.test_protocol_docs import section

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "v2.json").read_text(encoding="utf-8"))


def test_depth_counts_the_payload_object_as_one():
    assert "the payload object itself being 1" in section("### 11.1")
    check_json_depth("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))     # under the bound
    check_json_depth("{" + '"a":' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}")
    names = {v["name"]: v["reason"] for v in VECTORS["invalid"]}
    assert (names["nested_32_deep"], names["nested_33_deep"]) == ("bad_field", "bad_json")


def test_the_jwe_header_and_its_epk_are_stated_and_in_the_vectors():
    text = section("### 10.1")
    assert "`epk` has exactly the three" in text and "Member order and whitespace are free" in text
    for v in VECTORS["jwe"]["valid"]:
        header = json.loads(v["header_json"])
        assert set(header) == {"alg", "enc", "epk"} and set(header["epk"]) == {"kty", "crv", "x"}
    orders = {tuple(json.loads(v["header_json"])) for v in VECTORS["jwe"]["valid"]}
    assert len(orders) == 2                               # two member orders, both valid
    assert {v["name"] for v in VECTORS["jwe"]["invalid"]} >= {"epk_extra_member_kid",
                                                             "epk_carries_its_private_key"}


def test_a_receipts_list_is_8_or_32_long_with_1_to_32_real_hashes():
    row = next(line for line in section("### 8.10").splitlines() if line.startswith("| `offers` |"))
    assert "**8 or 32** entries: 1 … 32 real hashes" in row
    assert "1 … 32 entries:" not in row


def test_the_flow_says_the_intent_carries_the_terms_text(tmp_path):
    step2 = section("## 9. Flow").split("2. **Intent.**")[1].split("3. **Offers.**")[0]
    assert "(id + sha256)" not in step2 and "`text`" in step2
    with Store.open(tmp_path / "b") as store:                  # what the box really sends
        intent = Market(store).add_intent("bikes", {})["intent"]
        terms = unverified_payload(store.get_intent(intent).token)["terms"]
    assert set(terms) >= {"id", "sha256", "text"} and terms["text"]


def test_re_sends_stop_at_the_withdrawal_and_the_closed_inbox_is_counted():
    assert "stops re-sending an intent's offers once it has the intent's withdrawal" in section("### 8.10")
    step4 = section("### 11.2").split("\n4. ")[1].split("\n5. ")[0]
    assert "`intent_closed`" in step4 and "until the intent's `exp`" in step4
    assert "counted, never stored" in section("## 13. Reason codes")
