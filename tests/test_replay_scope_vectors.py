"""The `replay_scope` vectors (docs/protocol.md 11.3): an id is unique only within its
intent and its signer, for the reference verifier and for the box's intake alike."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vrm_protocol import ProtocolError, ReplayGuard, replay_key, verify
from vrm_protocol.codec import unverified_payload

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v2.json").read_text(encoding="utf-8"))
SCOPE = VECTORS["replay_scope"]


@pytest.mark.parametrize("case", SCOPE["cases"], ids=lambda c: c["name"])
def test_a_second_token_with_the_id_is_a_replay_only_in_the_same_intent_and_signer(case):
    guard = ReplayGuard()
    verify(SCOPE["first"], now=SCOPE["now"], replay=guard)
    assert unverified_payload(case["token"])["id"] == unverified_payload(SCOPE["first"])["id"]
    if case["reason"] is None:
        verify(case["token"], now=SCOPE["now"], replay=guard)
    else:
        with pytest.raises(ProtocolError) as exc:
            verify(case["token"], now=SCOPE["now"], replay=guard)
        assert exc.value.reason == case["reason"]


def test_the_cases_cover_each_scope():
    assert [c["reason"] for c in SCOPE["cases"]] == ["replay", None, None]
    first = unverified_payload(SCOPE["first"])
    keys = {replay_key(p["intent"], p["iss"], p["id"])
            for p in (unverified_payload(c["token"]) for c in SCOPE["cases"])}
    assert replay_key(first["intent"], first["iss"], first["id"]) in keys and len(keys) == 3
