"""What the box hands its faces for each ranked offer: the phone's accept page shows delivery
(days and region) from the vendor's signed offer, so the row carries them."""
from __future__ import annotations

from intake_box import Box
from vendor_messages import TestVendor
from vrm_protocol import topics


def test_a_ranked_offer_row_carries_delivery_days_and_region(tmp_path):
    box = Box(tmp_path / "box")
    try:
        intent = box.market.add_intent("bikes", {"budget_max": 800})["intent"]
        box.intake.refresh()
        token = box.store.get_intent(intent).token
        acme, beta = TestVendor("acme"), TestVendor("beta")
        for v in (acme, beta):
            box.feed(topics.vendor_profile(v.slug), v.profile())
        box.feed(topics.offers(intent), acme.offer(token, price=300, delivery_days=3, region="GB-LND"))
        box.feed(topics.offers(intent), beta.offer(token, price=400))
        rows = {r["vendor"]: r for r in box.market.ranked_offers(intent)}
        assert (rows["acme"]["delivery_days"], rows["acme"]["region"]) == (3, "GB-LND")
        assert (rows["beta"]["delivery_days"], rows["beta"]["region"]) == (None, None)
    finally:
        box.store.close()
