"""MQTT topic names of the VRM protocol: the one place they are spelled."""
from __future__ import annotations

from .messages import VERSION

PREFIX = f"vrm/v{VERSION}"   # the wire version is in the prefix too: v1 and v2 boxes never mix

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


def receipt(category: str, intent_id: str) -> str:
    """The box's signed receipts of the offers it stored for an intent (intent key; not retained)."""
    return f"{PREFIX}/receipts/{category}/{intent_id}"


def receipts(category: str, share_group: str | None = None) -> str:
    topic = f"{PREFIX}/receipts/{category}/+"
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


# --- reading topics back (the box and vendors route by topic; spelled here, next to the builders)
def parse_box_topic(topic: str) -> tuple[str, str] | None:
    """`vrm/v1/box/<intent>/<kind>` -> (intent, kind) with kind offers|countersignatures|acks."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/box" and parts[4] in BOX_KINDS:
        return parts[3], parts[4]
    return None


def parse_vendor_topic(topic: str) -> tuple[str, str] | None:
    """`vrm/v1/vendor/<vendor>/<kind>` -> (vendor, kind) with kind agreements|disclosures|revocations,
    and `vrm/v1/vendors/<vendor>/profile` -> (vendor, "profile")."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/vendor" and parts[4] in VENDOR_KINDS:
        return parts[3], parts[4]
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/vendors" and parts[4] == "profile":
        return parts[3], "profile"
    return None


def parse_intent_topic(topic: str) -> tuple[str, str, str] | None:
    """`vrm/v1/intents/<cat>/<id>` -> ("intent", cat, id); withdrawals -> ("withdrawal", cat, id);
    receipts -> ("receipt", cat, id)."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:2]) == PREFIX and parts[2] in _CHANNELS:
        return _CHANNELS[parts[2]], parts[3], parts[4]
    return None


_CHANNELS = {"intents": "intent", "withdrawals": "withdrawal", "receipts": "receipt"}


BOX_KINDS = ("offers", "countersignatures", "acks")
VENDOR_KINDS = ("agreements", "disclosures", "revocations")
