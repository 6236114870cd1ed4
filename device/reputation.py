"""A vendor's reputation, as this box sees it: from the person's own agreements and reviews.

Why apart from the rules: the rules are the person's format (validated, compiled, pure over
one offer); reputation is a summary of the store's history that the market computes and hands
to the ranking through `rules.Context.reputation`. Pure: the caller passes the rows and `now`.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

GOOD_AGREEMENT_STATUSES = frozenset({"active", "ended"})
UNACKED_DELETION_PENALTY = 2.0   # one ignored deletion request outweighs two good agreements
REVOCATION_GRACE_S = 86400       # with `now`, an unacknowledged revocation younger than this is neutral


def reputation_from(agreements: Iterable[Mapping[str, Any]], reviews: Iterable[Mapping[str, Any]],
                    now: int | None = None) -> dict[str, float]:
    """Vendor -> reputation in (-1, 1) from the person's own history only (nothing from others).

    Evidence per vendor: +1 per agreement that is active or ended, or revoked with the deletion
    acknowledged; -2 per agreement revoked with a deletion request not acknowledged (or
    acknowledged with deleted=false); (rating - 3) / 2 per rated review (1..5 -> -1..1).
    reputation = sum(evidence) / (1 + weight of evidence), where the weight is 1 per agreement or
    review and 2 per unacknowledged deletion: one neutral prior observation pulls thin evidence
    towards 0. Agreement dicts use the AgreementRecord names (vendor, status, revocation_ack,
    updated_at) plus optional `delete` (default true) and `deleted`; review dicts use vendor and
    rating (None = unrated, ignored). Malformed entries are skipped.
    """
    total: dict[str, float] = {}
    weight: dict[str, float] = {}

    def add(vendor: Any, value: float, w: float = 1.0) -> None:
        if isinstance(vendor, str) and vendor:
            total[vendor] = total.get(vendor, 0.0) + value
            weight[vendor] = weight.get(vendor, 0.0) + w

    for a in agreements:
        if not isinstance(a, Mapping):
            continue
        status, vendor = a.get("status"), a.get("vendor")
        if status in GOOD_AGREEMENT_STATUSES:
            add(vendor, 1.0)
        elif status == "revoked" and a.get("delete", True):
            deleted = a.get("deleted")
            if deleted is False:                        # the vendor answered: not deleted
                add(vendor, -UNACKED_DELETION_PENALTY, UNACKED_DELETION_PENALTY)
            elif deleted is True or a.get("revocation_ack"):
                add(vendor, 1.0)                        # deletion honoured
            else:                                       # no acknowledgement (yet)
                since = a.get("updated_at")
                young = (now is not None and isinstance(since, int)
                         and now - since < REVOCATION_GRACE_S)
                if not young:
                    add(vendor, -UNACKED_DELETION_PENALTY, UNACKED_DELETION_PENALTY)
    for r in reviews:
        if not isinstance(r, Mapping):
            continue
        rating = r.get("rating")
        if isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5:
            add(r.get("vendor"), (rating - 3) / 2)
    return {v: max(-1.0, min(1.0, total[v] / (1.0 + weight[v]))) for v in sorted(total)}
