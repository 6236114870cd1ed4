"""Receipts: which offers the box stored, per intent, in padded batches, each intent on its own
random clock (pure: time and randomness are passed in).

Why: Mosquitto acknowledges a QoS 1 publish before it is on disk, so a broker crash can lose an
offer the vendor saw acknowledged. The box therefore tells the vendor, end to end, what it has
stored: after a commit, one signed `receipt` per intent naming the sha256 (token_hash) of each
offer token stored (or already held: a re-sent duplicate is receipted again). A hash names
nothing to anyone who does not hold the token, and each list is padded with random hashes to a
bucket (RECEIPT_BUCKETS), so a receipt's size says little about how many offers the intent drew.
Nothing here signs or publishes: the daemon (service.py) does, after the commit.

Why each intent waits on its own clock (`Waiting`): receipts of two intents that left together,
or with one `iat`, would tell anyone who can read receipts that both intents are one box's (make
the box store a copy on each, then watch). So what one intent has stored waits an independent
random delay (RECEIPT_DELAY_S) from its first unreceipted offer, and intents leave one at a time:
the time between two intents' receipts is then what it would be on two boxes.
"""
from __future__ import annotations

import base64
import logging
import random
import secrets
from dataclasses import dataclass
from typing import Callable, Iterable

from vrm_protocol import Receipt, token_hash
from vrm_protocol.messages import MAX_RECEIPT_OFFERS, RECEIPT_BUCKETS

log = logging.getLogger(__name__)

RECEIPT_TTL_S = 24 * 3600   # a vendor away longer re-sends on return and is receipted again
# Seconds an intent's stored offers wait for their receipt: drawn for each intent on its own.
# Short next to a vendor's first re-send (30 s in the reference kit), long enough that two
# intents' receipts rarely share a moment by anything but chance.
RECEIPT_DELAY_S = (0.2, 2.5)


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


class Waiting:
    """What each intent has stored and not yet receipted, and when its receipt is due."""

    def __init__(self, rng: random.Random, delay_s: tuple[float, float] = RECEIPT_DELAY_S) -> None:
        self._rng = rng
        self._delay = delay_s
        self._stored: dict[str, list[Stored]] = {}
        self._distinct: dict[str, set[str]] = {}     # the tokens among them, copies once
        self._due: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._stored.values())

    def add(self, stored: Iterable[Stored], now: float) -> None:
        """The offers a commit stored; an intent's clock starts with its first waiting offer. An
        intent with a full receipt's worth waiting is due at once (its own size, no other's)."""
        for s in stored:
            waiting = self._stored.setdefault(s.intent, [])
            waiting.append(s)
            if s.intent not in self._due:
                self._due[s.intent] = now + self._rng.uniform(*self._delay)
            # full by distinct offers only (copies must not let a vendor time two intents'
            # receipts), and even then a short random wait of its own
            distinct = self._distinct.setdefault(s.intent, set())
            distinct.add(s.token)
            if len(distinct) >= MAX_RECEIPT_OFFERS:
                self._due[s.intent] = min(self._due[s.intent],
                                          now + self._rng.uniform(0, self._delay[0]))

    def next_due(self) -> float | None:
        return min(self._due.values()) if self._due else None

    def take_due(self, now: float) -> list[Stored]:
        """The waiting offers of ONE intent whose time has come (the earliest), else []: the
        caller takes them one intent at a time, so no two intents' receipts are one batch."""
        due = [(at, intent) for intent, at in self._due.items() if at <= now]
        if not due:
            return []
        _at, intent = min(due)
        del self._due[intent]
        self._distinct.pop(intent, None)
        return self._stored.pop(intent)

    def redraw(self, now: float) -> None:
        """Each waiting intent a fresh delay from `now` (after a reconnect: what waited through
        an outage must not leave in one burst the moment the box is back)."""
        self._due = {intent: now + self._rng.uniform(*self._delay) for intent in self._due}

    def drop_all(self) -> int:
        """Forget everything waiting (at shutdown: sent together they would link the intents;
        each vendor's re-send is receipted after the restart). Returns how many offers."""
        n = len(self)
        self._stored.clear()
        self._distinct.clear()
        self._due.clear()
        return n
