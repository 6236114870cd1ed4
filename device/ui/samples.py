"""Sample states, one per screen, as the box's button socket would answer: the golden frames
(tests/test_ui_frames.py), the frame benchmark (bench/bench_ui.py) and the picture in
docs/ui.md are drawn from these. `hostile=True` gives vendors the worst names and prices the
protocol lets through (control characters, RTL overrides, 2,000 characters, wide glyphs)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .state import Ask, Data, Request, State, pending_items

NOW = 1_800_000_000
HOSTILE_NAME = "\u202eevil\u202c Bikes\x00\x1b[2J\u200b" + "Ω漢字ｗｉｄｅ" * 3 + "A" * 2000
# The pair screen's address and certificate come from the config: the hostile box has the longest
# host name a label may have (63 characters), which no QR code fits at 128x32.
PAIR_URL = "https://vrmbox.local:8443/pair"
HOSTILE_PAIR_URL = "https://" + "vrmbox-" + "x" * 56 + ".local:8443/pair"
FINGERPRINT = ":".join(f"{(i * 37 + 11) % 256:02X}" for i in range(32))
HOSTILE_ITEM = "Roadster\n\t\u2066carbon\u2069 " + "✓" * 50 + " " + "long " * 400


def _offer(i: int, vendor: str, item: str, price: Any, currency: Any, score: float) -> dict[str, Any]:
    return {"offer": f"offer-{i}", "intent": "intent-1", "vendor": vendor, "item": item, "price": price,
            "currency": currency, "valid_until": NOW + 5 * 3600, "status": "new", "eligible": True,
            "score": score,
            "explanation": {"passed": ["max_price", "require_terms_accepted"], "failed": [],
                            "contributions": {"price": score * 0.7, "delivery": score * 0.3,
                                              "reputation": 0.0}, "score": score}}


def data(hostile: bool = False) -> Data:
    v1, item1 = (HOSTILE_NAME, HOSTILE_ITEM) if hostile else ("beta", "Beta City bike, 7 gears")
    price1, cur1 = (1e300, "\u202eRUE\u202c€€€€€") if hostile else (520.0, "EUR")
    offers = (_offer(1, v1, item1, price1, cur1, 0.35), _offer(2, "alpha", "Alpha Roadster", 650.0, "EUR", 0.19),
              _offer(3, "gamma", "Gamma Carbon", 780.5, "EUR", 0.02))
    pending = pending_items({
        "agreements": [{"agreement": "agr-1", "vendor": v1 if hostile else "Acme", "fields": ["email"],
                        "purpose": "send the receipt", "duration_days": 30,
                        "requested_by": "the phone app"}],
        "requests": [{"request": "req-1", "op": "erase", "what": "erase everything on the box",
                      "requested_by": "the phone app", "expires_at": NOW + 300}]})
    return Data(
        status={"connected": True, "box_id": "box-1", "queue": 0, "live_intents": 2,
                "last_offer_at": NOW - 180, "rejected_total": 12, "single_user": True},
        offers=offers,
        intents=({"intent": "intent-1", "category": "bikes", "status": "active", "offers": 3},
                 {"intent": "intent-2", "category": "tents", "status": "active", "offers": 0}),
        agreements=({"agreement": "a1", "vendor": v1, "status": "active"},
                    {"agreement": "a2", "vendor": "alpha", "status": "revoked", "revocation": "pending"},
                    {"agreement": "a3", "vendor": "gamma", "status": "revoked", "revocation": "acknowledged"},
                    {"agreement": "a4", "vendor": "delta", "status": "confirmed", "overdue": True}),
        presets=({"name": "weekly groceries", "category": "groceries", "description": None},
                 {"name": "bike", "category": "bikes", "description": "a city bike"}),
        pending=pending,
        # exactly what the daemon's pair_code answers (device/pairing.py new_code): no URL
        pair={"code": "4829137465", "display": "48291 37465", "expires_at": NOW + 300},
        preview={"offer": "offer-1", "vendor": v1, "fields": ["email", "postal_address"],
                 "purpose": "deliver the bike", "duration_days": 30},
        loaded=frozenset({"status", "offers", "intents", "agreements", "presets", "pending", "pair_code",
                          "accept_preview"}))


def states(hostile: bool = False) -> dict[str, State]:
    """name -> a state showing that screen."""
    base = State(connected=True, data=data(hostile), seen=frozenset({"offer-3"}),
                 pair_url=HOSTILE_PAIR_URL if hostile else PAIR_URL, cert_fingerprint=FINGERPRINT)
    return {
        "status": base,
        "menu": replace(base, screen="menu", cursor=1),
        "matches": replace(base, screen="matches", cursor=0),
        "detail": replace(base, screen="detail", offer="offer-1"),
        "detail_scrolled": replace(base, screen="detail", offer="offer-1", scroll=4),
        "actions": replace(base, screen="actions", offer="offer-1"),
        "accept": replace(base, screen="accept", offer="offer-1"),
        # scrolled to the end of what is sent: only now may a hold send it
        "accept_end": replace(base, screen="accept", offer="offer-1", scroll=99),
        "pending": replace(base, screen="pending"),
        "pending_end": replace(base, screen="pending", scroll=99),
        "pending_request": replace(base, screen="pending", cursor=1),
        "intents": replace(base, screen="intents", cursor=2),
        "ask": replace(base, screen="ask", ask=Ask("Withdraw bikes?", Request("intent_withdraw", {"intent": "intent-1"}), "intents")),
        "agreements": replace(base, screen="agreements"),
        "pair": replace(base, screen="pair"),
        # DOWN on the pair screen: the certificate's fingerprint, from its start and at its end
        "pair_cert": replace(base, screen="pair", scroll=1),
        "pair_cert_end": replace(base, screen="pair", scroll=99),
        # a development box: no HTTPS address in the config, the code alone
        "pair_development": replace(base, screen="pair", pair_url=None, cert_fingerprint=None),
        "pair_loading": replace(base, screen="pair", data=replace(base.data, pair=None)),
        "pair_url_only": replace(base, screen="pair",
                                 data=replace(base.data, pair=None, unavailable=frozenset({"pair_code"}))),
        "pair_unavailable": replace(base, screen="pair", pair_url=None, cert_fingerprint=None,
                                    data=replace(base.data, pair=None, unavailable=frozenset({"pair_code"}))),
        "status_pairing_locked": replace(base, data=replace(base.data, pairing={
            "code": "active", "expires_at": NOW + 200, "failures": 7, "max_failures": 30,
            "clients_locked": 1, "client_max_failures": 5, "last_failure_at": NOW - 20})),
        "status_pairing_spent": replace(base, data=replace(base.data, pending=(), pairing={
            "code": "spent", "expires_at": NOW + 200, "failures": 30, "max_failures": 30,
            "clients_locked": 6, "client_max_failures": 5, "last_failure_at": NOW - 5})),
        "broker_down": replace(base, data=replace(base.data, status={**base.data.status, "connected": False})),
        "offline": replace(base, connected=False, connection_detail="box daemon not running, retrying"),
        "notice": replace(base, screen="matches", notice="snoozed for a day"),
        "empty_matches": replace(State(connected=True), screen="matches",
                                 data=Data(loaded=frozenset({"offers"}))),
    }
