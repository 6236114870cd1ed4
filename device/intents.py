"""Building intents and withdrawals: pure, so the CLI, the buttons and tests share one path.

Each intent gets a fresh Identity: two intents of the same person share no identifier.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vrm_protocol import Identity, Intent, IntentWithdrawal, Terms, new_id, sign
from vrm_protocol.messages import body_to_dict, parse_dataclass, terms_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltIntent:
    intent_id: str
    identity: Identity
    token: str
    body: dict[str, Any]
    expires_at: int


def terms_for(terms_id: str, text: str, uri: str | None = None) -> Terms:
    """The person's proffered terms: an id, the SHA-256 of the exact text (IEEE 7012 spirit) and
    the text itself, so a vendor can read what it accepts without fetching anything (protocol v2;
    `uri` is an optional pointer to the same text)."""
    terms = Terms(id=terms_id, sha256=terms_digest(text), uri=uri, text=text)
    terms.check()
    return terms


def build_intent(category: str, terms: Terms, attributes: dict[str, Any], description: str | None,
                 *, now: float, ttl: int, identity: Identity | None = None) -> BuiltIntent:
    """Sign a new intent with a key made for it alone; raises ProtocolError on a bad field."""
    identity = identity or Identity.generate()
    intent_id = new_id()
    body = Intent(intent=intent_id, category=category, terms=terms, description=description,
                  attributes=dict(attributes))
    body.check()
    # Round-trip through the schema so a bad attribute fails here, not at the vendor.
    parse_dataclass(Intent, body_to_dict(body))
    token = sign(identity, body, now=now, ttl=ttl, msg_id=intent_id)
    return BuiltIntent(intent_id, identity, token, body_to_dict(body), int(now) + int(ttl))


def build_withdrawal(identity: Identity, intent_id: str, category: str, *, now: float,
                     ttl: int = 7 * 24 * 3600) -> str:
    """Signed by the intent's own key, so only the person who cast it can withdraw it."""
    return sign(identity, IntentWithdrawal(intent=intent_id, category=category), now=now, ttl=ttl)
