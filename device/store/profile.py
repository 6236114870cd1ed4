"""The person's profile fields (with provenance rules) and the box's settings.

Why provenance is enforced here: every writer (CLI, daemon, companion app, import) goes through
these methods, so a read-only field set by a professional source cannot be edited by anyone else.
"""
from __future__ import annotations

import logging
from typing import Any

from ..audit import canonical_json
from ..records import PROVENANCES, ProfileField
from .checks import NAME_RE, ProvenanceError, StoreError, check_json_value
from .connection import StoreBase

log = logging.getLogger(__name__)

_MISSING = object()


class ProfileStore(StoreBase):
    # ---------------------------------------------------------------- profile
    def set_profile_field(self, name: str, value: Any, provenance: str = "self",
                          source: str | None = None) -> None:
        """Set a profile field. A read-only field can only be replaced by its own source with
        provenance read-only (the professional channel); the person may only annotate it."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise StoreError("field name must be 1-64 characters of [A-Za-z0-9_.-]")
        if value is None:
            raise StoreError(f"field {name} needs a value (delete the field instead of setting null)")
        if provenance not in PROVENANCES:
            raise StoreError(f"provenance must be one of {list(PROVENANCES)}")
        if provenance in ("co-managed", "read-only", "claim") and not source:
            raise StoreError(f"provenance {provenance} needs a source (vendor, issuer or claim id)")
        if source is not None and (not isinstance(source, str) or len(source) > 200):
            raise StoreError("source must be a string of at most 200 characters")
        check_json_value(value, "value")
        with self._tx():
            row = self._conn.execute("SELECT provenance, source, annotation FROM profile WHERE name=?",
                                     (name,)).fetchone()
            if row and row[0] == "read-only" and not (provenance == "read-only" and source == row[1]):
                raise ProvenanceError(f"profile field {name!r} is read-only (set by {row[1]}); "
                                      "you can annotate it but not edit it")
            if provenance == "claim" and not self._conn.execute(
                    "SELECT 1 FROM claims WHERE id=?", (source,)).fetchone():
                raise StoreError(f"no verified claim {source!r} to back this field")
            annotation = row[2] if row else None
            self._conn.execute(
                "INSERT OR REPLACE INTO profile(name, value, provenance, source, annotation, updated_at)"
                " VALUES (?,?,?,?,?,?)",
                (name, self._seal("profile", "value", (name,), value), provenance, source,
                 annotation, self.now()))
            self.audit.append("profile_changed", {"field": name, "provenance": provenance,
                                                  "source": source})

    def annotate_profile_field(self, name: str, annotation: str | None) -> None:
        """The person's note on any field, including read-only ones (it never changes the value)."""
        if annotation is not None and (not isinstance(annotation, str) or len(annotation) > 2000):
            raise StoreError("annotation must be text of at most 2000 characters")
        with self._tx():
            if not self._conn.execute("SELECT 1 FROM profile WHERE name=?", (name,)).fetchone():
                raise StoreError(f"no profile field {name!r}")
            sealed = None if annotation is None else self._seal("profile", "annotation", (name,), annotation)
            self._conn.execute("UPDATE profile SET annotation=? WHERE name=?", (sealed, name))
            self.audit.append("profile_annotated", {"field": name})

    def delete_profile_field(self, name: str) -> None:
        with self._tx():
            row = self._conn.execute("SELECT provenance FROM profile WHERE name=?", (name,)).fetchone()
            if not row:
                raise StoreError(f"no profile field {name!r}")
            if row[0] == "read-only":
                raise ProvenanceError(f"profile field {name!r} is read-only; it cannot be deleted")
            self._conn.execute("DELETE FROM profile WHERE name=?", (name,))
            self.audit.append("profile_deleted", {"field": name})

    def get_profile(self) -> dict[str, ProfileField]:
        out = {}
        for name, value, prov, source, ann, upd in self._conn.execute(
                "SELECT name, value, provenance, source, annotation, updated_at FROM profile ORDER BY name"):
            out[name] = ProfileField(name, self._open("profile", "value", (name,), value), prov, source,
                                     self._open("profile", "annotation", (name,), ann), upd)
        return out

    # ---------------------------------------------------------------- settings
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return default if row is None else self._open("settings", "value", (key,), row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Small JSON values; a change of value is audited by key (never by value)."""
        if not isinstance(key, str) or not 0 < len(key) <= 128:
            raise StoreError("setting key must be 1-128 characters")
        if value is None:
            raise StoreError(f"setting {key} needs a value")
        check_json_value(value, "setting value")
        with self._tx():
            old = self.get_setting(key, _MISSING)
            if old is not _MISSING and canonical_json(old) == canonical_json(value):
                return
            self._conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?,?)",
                               (key, self._seal("settings", "value", (key,), value)))
            self.audit.append("setting_changed", {"key": key})

    def all_settings(self) -> dict[str, Any]:
        return {k: self._open("settings", "value", (k,), v)
                for k, v in self._conn.execute("SELECT key, value FROM settings ORDER BY key")}
