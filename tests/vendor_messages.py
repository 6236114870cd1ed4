"""Signed vendor messages for tests that drive the box's intake directly (no vendor process).

The vendor kit is the real vendor; this builds hostile and edge-case messages it never would.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vrm_protocol import (Countersignature, DecryptionKey, Identity, Item, Offer, RevocationAck,
                          TermsResponse, VendorProfile, sign, token_hash, unseal)
from vrm_protocol.codec import unverified_payload


@dataclass
class TestVendor:
    __test__ = False  # not a pytest class
    slug: str
    identity: Identity = field(default_factory=Identity.generate)
    enc: DecryptionKey = field(default_factory=DecryptionKey.generate)

    @property
    def did(self) -> str:
        return self.identity.did

    def profile(self, now: float | None = None, categories: list[str] | None = None) -> str:
        body = VendorProfile(vendor=self.slug, name=self.slug.title(), categories=categories or ["bikes"],
                             enc_key=self.enc.public)
        return sign(self.identity, body, now=now or time.time(), ttl=30 * 86400)

    def offer_body(self, intent_token: str, price: float = 100.0, currency: str = "EUR",
                   name: str = "Bike", decision: str = "accept", valid_s: int = 3600,
                   now: float | None = None, **kw: Any) -> Offer:
        intent = unverified_payload(intent_token)
        now = now or time.time()
        return Offer(intent=intent["intent"], vendor=self.slug, item=Item(name=name, brand=kw.pop("brand", None)),
                     price=price, currency=currency, valid_until=int(now) + valid_s,
                     terms_response=TermsResponse(id=intent["terms"]["id"], sha256=intent["terms"]["sha256"],
                                                  decision=decision), **kw)

    def offer(self, intent_token: str, now: float | None = None, ttl: int = 3600, **kw: Any) -> str:
        now = now or time.time()
        kw.setdefault("valid_s", ttl)   # §8.4: valid_until is the JWS exp
        return sign(self.identity, self.offer_body(intent_token, now=now, **kw), now=now, ttl=ttl)

    def opened(self, token: str) -> str:
        """The signed message inside a sealed one (v2 agreements, revocations); a JWS as it is."""
        return unseal(token, self.enc) if token.count(".") == 4 else token

    def countersign(self, agreement_token: str, now: float | None = None) -> str:
        inner = self.opened(agreement_token)
        p = unverified_payload(inner)
        return sign(self.identity, Countersignature(agreement=p["id"], agreement_hash=token_hash(inner),
                                                    intent=p["intent"]),
                    now=now or time.time(), ttl=86400)

    def ack(self, revocation_token: str, now: float | None = None) -> str:
        p = unverified_payload(self.opened(revocation_token))
        return sign(self.identity, RevocationAck(agreement=p["agreement"], intent=p["intent"],
                                                 revocation=p["id"], deleted=True),
                    now=now or time.time(), ttl=86400)
