"""VRM protocol (version: messages.VERSION): pure build/sign/verify/parse, shared by the box and the vendor kit. No I/O."""
from .codec import (MAX_MESSAGE_BYTES, Envelope, Message, ReplayGuard, new_id, read_header, replay_key,
                    sign, token_hash, verify)
from .didkey import Identity, did_from_public_bytes, public_bytes_from_did
from .encryption import DecryptionKey, decrypt_json, encrypt_json, seal, unseal
from .errors import REASONS, ProtocolError
from .messages import (VERSION, Agreement, Countersignature, Disclosure, EncryptionKey, Intent,
                       IntentWithdrawal, Item, Offer, Receipt, Revocation, RevocationAck, Terms,
                       TermsResponse, VendorProfile)

__all__ = [
    "MAX_MESSAGE_BYTES", "Envelope", "Message", "ReplayGuard", "new_id", "read_header", "replay_key", "sign",
    "token_hash", "verify", "Identity", "did_from_public_bytes", "public_bytes_from_did",
    "DecryptionKey", "decrypt_json", "encrypt_json", "seal", "unseal", "REASONS", "ProtocolError", "VERSION",
    "Agreement", "Countersignature", "Disclosure", "EncryptionKey", "Intent", "IntentWithdrawal",
    "Item", "Offer", "Receipt", "Revocation", "RevocationAck", "Terms", "TermsResponse", "VendorProfile",
]
