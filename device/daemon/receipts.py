"""Receipts: which offers one commit stored, per intent, in padded batches (pure).

Why: Mosquitto acknowledges a QoS 1 publish before it is on disk, so a broker crash can lose an
offer the vendor saw acknowledged. The box therefore tells the vendor, end to end, what it has
stored: after a commit, one signed `receipt` per intent naming the sha256 (token_hash) of each
offer token stored (or already held: a re-sent duplicate is receipted again). A hash names
nothing to anyone who does not hold the token, and each list is padded with random hashes to a
bucket (RECEIPT_BUCKETS), so a receipt's size says little about how many offers the intent drew.
Nothing here signs or publishes: the daemon (service.py) does, after the commit.
"""
from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from typing import Callable, Iterable

from vrm_protocol import Receipt, token_hash
from vrm_protocol.messages import MAX_RECEIPT_OFFERS, RECEIPT_BUCKETS

log = logging.getLogger(__name__)

RECEIPT_TTL_S = 24 * 3600   # a vendor away longer re-sends on return and is receipted again


def random_hash() -> str:
    """A filler: 32 random bytes, unpadded base64url, like any token_hash."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Stored:
    """One offer a commit stored (or found already stored)."""

    intent: str
    token: str


def padded(hashes: list[str], filler: Callable[[], str] = random_hash) -> list[str]:
    """`hashes` followed by fillers up to the smallest bucket that holds them."""
    if not 0 < len(hashes) <= MAX_RECEIPT_OFFERS:
        raise ValueError(f"a receipt names 1..{MAX_RECEIPT_OFFERS} offers, not {len(hashes)}")
    size = next(b for b in RECEIPT_BUCKETS if b >= len(hashes))
    return hashes + [filler() for _ in range(size - len(hashes))]


def batch(stored: Iterable[Stored], categories: dict[str, str],
          filler: Callable[[], str] = random_hash,
          per_receipt: int = MAX_RECEIPT_OFFERS) -> list[Receipt]:
    """Receipt bodies for what one commit stored: per intent (in first-seen order), at most
    `per_receipt` real hashes each, padded. An intent missing from `categories` (gone from the
    store meanwhile) gets none; a token seen twice in the commit is named once."""
    per_receipt = max(1, min(per_receipt, MAX_RECEIPT_OFFERS))
    by_intent: dict[str, list[str]] = {}
    for s in stored:
        hashes = by_intent.setdefault(s.intent, [])
        h = token_hash(s.token)
        if h not in hashes:
            hashes.append(h)
    out = []
    for intent, hashes in by_intent.items():
        category = categories.get(intent)
        if category is None:
            continue
        for i in range(0, len(hashes), per_receipt):
            out.append(Receipt(intent=intent, category=category,
                               offers=padded(hashes[i:i + per_receipt], filler)))
    return out
