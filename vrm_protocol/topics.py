"""MQTT topic names of VRM protocol v1: the one place they are spelled."""
from __future__ import annotations

PREFIX = "vrm/v1"

# QoS and retention per topic family, stated once for the box, the vendor kit and the docs.
QOS = 1


def vendor_profile(vendor: str) -> str:
    """Retained: the vendor's signed profile."""
    return f"{PREFIX}/vendors/{vendor}/profile"


def vendor_profiles() -> str:
    return f"{PREFIX}/vendors/+/profile"


def intent(category: str, intent_id: str) -> str:
    """Retained with MQTT 5 message expiry; cleared (empty retained payload) on withdrawal."""
    return f"{PREFIX}/intents/{category}/{intent_id}"


def intents(category: str, share_group: str | None = None) -> str:
    """Subscription filter for one category; with a share group, an MQTT 5 shared subscription."""
    topic = f"{PREFIX}/intents/{category}/+"
    return f"$share/{share_group}/{topic}" if share_group else topic


def withdrawal(category: str, intent_id: str) -> str:
    return f"{PREFIX}/withdrawals/{category}/{intent_id}"


def withdrawals(category: str, share_group: str | None = None) -> str:
    topic = f"{PREFIX}/withdrawals/{category}/+"
    return f"$share/{share_group}/{topic}" if share_group else topic


# --- addressed to the box, per intent (the intent id is the only address vendors know)
def offers(intent_id: str) -> str:
    return f"{PREFIX}/box/{intent_id}/offers"


def countersignatures(intent_id: str) -> str:
    return f"{PREFIX}/box/{intent_id}/countersignatures"


def revocation_acks(intent_id: str) -> str:
    return f"{PREFIX}/box/{intent_id}/acks"


def box_inbox(intent_id: str) -> str:
    """Everything addressed to one intent."""
    return f"{PREFIX}/box/{intent_id}/+"


# --- addressed to a vendor
def agreements(vendor: str) -> str:
    return f"{PREFIX}/vendor/{vendor}/agreements"


def disclosures(vendor: str) -> str:
    return f"{PREFIX}/vendor/{vendor}/disclosures"


def revocations(vendor: str) -> str:
    return f"{PREFIX}/vendor/{vendor}/revocations"


def vendor_inbox(vendor: str, share_group: str | None = None) -> str:
    topic = f"{PREFIX}/vendor/{vendor}/+"
    return f"$share/{share_group}/{topic}" if share_group else topic


def availability(box_id: str) -> str:
    """The box's online/offline state (last will)."""
    return f"{PREFIX}/status/{box_id}"
