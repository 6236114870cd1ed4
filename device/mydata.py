"""What the person can do with their own data: profile fields, their stuff, suppliers, reviews,
verified claims, the audit log, an export.

Why a layer of its own beside `market.py`: these never talk to vendors, but every caller (the
CLI, the companion app through `control.sock`) must reach the same checks, so none of them
writes to the store directly. Every function takes the store and returns plain JSON-able data.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from . import claims as claims_mod
from . import portability
from .store import Store, StoreError

log = logging.getLogger(__name__)

PROVENANCES = ("self", "co-managed")
MAX_AUDIT_PAGE = 500


class MyDataError(ValueError):
    """A change to the person's own data cannot be done as asked; the message says why."""


def _plain(obj: Any) -> Any:
    """Records as dicts, without secrets such as intent keys or the raw claim token."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name not in ("identity", "jwt")}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (StoreError, claims_mod.ClaimError, portability.PortabilityError) as exc:
        raise MyDataError(str(exc)) from exc


# ------------------------------------------------------------------ profile
def profile(store: Store) -> list[dict[str, Any]]:
    return [_plain(f) for f in store.get_profile().values()]


def profile_set(store: Store, name: str, value: Any, provenance: str = "self",
                source: str | None = None) -> dict[str, Any]:
    if provenance not in PROVENANCES:
        raise MyDataError(f"provenance must be one of {', '.join(PROVENANCES)}, not {provenance!r}")
    if provenance == "co-managed" and not source:
        raise MyDataError("a co-managed field names the vendor that co-manages it")
    _guard(store.set_profile_field, name, value, provenance=provenance, source=source)
    return {"ok": True, "field": name, "provenance": provenance}


def profile_annotate(store: Store, name: str, annotation: str | None) -> dict[str, Any]:
    _guard(store.annotate_profile_field, name, annotation)
    return {"ok": True, "field": name}


def profile_delete(store: Store, name: str) -> dict[str, Any]:
    if name not in store.get_profile():
        raise MyDataError(f"your profile has no field {name!r}")
    _guard(store.delete_profile_field, name)
    return {"ok": True, "field": name, "deleted": True}


# ------------------------------------------------------------------ stuff, suppliers, reviews
def stuff(store: Store) -> list[dict[str, Any]]:
    return _plain(store.list_stuff())


def stuff_add(store: Store, name: str, supplier: str | None = None, purchase_date: str | None = None,
              price: float | None = None, currency: str | None = None,
              warranty_end: str | None = None, notes: str | None = None) -> dict[str, Any]:
    return _plain(_guard(store.add_stuff, name, supplier=supplier, purchase_date=purchase_date,
                         price=price, currency=currency, warranty_end=warranty_end, notes=notes))


def suppliers(store: Store) -> list[dict[str, Any]]:
    return _plain(store.list_suppliers())


def supplier_add(store: Store, vendor: str, name: str, notes: str | None = None) -> dict[str, Any]:
    _guard(store.add_supplier, vendor, name, notes)
    return {"ok": True, "vendor": vendor}


def reviews(store: Store) -> list[dict[str, Any]]:
    return _plain(store.list_reviews())


def review_add(store: Store, vendor: str, text: str, rating: int | None = None,
               agreement: str | None = None) -> dict[str, Any]:
    r = _guard(store.add_review, vendor, text, rating, agreement)
    return {"ok": True, "id": r.id, "vendor": r.vendor}


# ------------------------------------------------------------------ claims
def claims(store: Store) -> list[dict[str, Any]]:
    return _plain(store.list_claims())


def claims_import(store: Store, token: str) -> dict[str, Any]:
    return _plain(_guard(claims_mod.import_claim, store, token))


def claims_trust(store: Store, did: str) -> dict[str, Any]:
    _guard(claims_mod.trust_issuer, store, did)
    return {"ok": True, "trusted_issuers": claims_mod.trusted_issuers(store)}


# ------------------------------------------------------------------ audit and export
def audit(store: Store, offset: int = 0, limit: int = 50, event_type: str | None = None) -> dict[str, Any]:
    """One page of the audit log, newest last, optionally only one event type."""
    if offset < 0 or not 0 < limit <= MAX_AUDIT_PAGE:
        raise MyDataError(f"offset must be >= 0 and limit 1..{MAX_AUDIT_PAGE}")
    entries = store.audit.entries(offset, limit)
    if event_type:
        entries = [e for e in entries if e.event_type == event_type]
    return {"total": store.audit.count(), "offset": offset, "entries": _plain(entries)}


def audit_verify(store: Store) -> dict[str, Any]:
    return store.audit.verify().to_dict()


def export(store: Store) -> dict[str, Any]:
    """Everything, in the clear, as the signed export document (docs/store.md)."""
    return _guard(portability.build_export, store)
