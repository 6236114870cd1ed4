"""The one declaration of store.db's tables, from which both the DDL (migrations) and the
export/import spec (snapshot, replace_all, check_tables) are produced.

Why one declaration: a column added to the DDL but not to the export would be silently lost by
export/import (and the reverse would fail at import); deriving both from here makes that
impossible. Pure: data and string building only.

Column kinds: text, int, json (plain JSON text) and sealed (JSON sealed with the data key,
see keystore.Cipher; never index a sealed column). `pk` columns name the row in the AES-GCM
associated data. `enum` lists the values a clear column may hold.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..records import (AGREEMENT_STATUSES, INTENT_STATUSES, OFFER_STATUSES, PROVENANCES,
                       VENDOR_STATUSES)

log = logging.getLogger(__name__)

_SQL_TYPES = {"text": "TEXT", "int": "INTEGER", "json": "TEXT", "sealed": "BLOB"}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str                               # text | int | json | sealed
    nullable: bool = False
    enum: tuple[str, ...] | None = None
    sql_type: str | None = None             # only where the stored type differs from the kind's

    @property
    def spec(self) -> str:
        """The export spec's spelling: the kind, "?" when NULL is allowed."""
        return self.kind + ("?" if self.nullable else "")


@dataclass(frozen=True)
class Table:
    name: str
    pk: tuple[str, ...]
    columns: tuple[Column, ...]
    exported: bool = True                   # meta and the audit tables travel differently
    autoincrement: bool = False             # row ids never reused (the outbox)
    check: str | None = None                # a CHECK on the (single) primary key
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _c(name: str, kind: str, nullable: bool = False, **kw: object) -> Column:
    return Column(name, kind, nullable, **kw)  # type: ignore[arg-type]


SCHEMA: tuple[Table, ...] = (
    Table("meta", ("key",), (_c("key", "text"), _c("value", "text")), exported=False),
    Table("settings", ("key",), (_c("key", "text"), _c("value", "sealed"))),
    Table("profile", ("name",), (_c("name", "text"), _c("value", "sealed"),
                                 _c("provenance", "text", enum=PROVENANCES), _c("source", "text", True),
                                 _c("annotation", "sealed", True), _c("updated_at", "int"))),
    Table("stuff", ("id",), (_c("id", "text"), _c("data", "sealed"), _c("created_at", "int"))),
    Table("suppliers", ("vendor",), (_c("vendor", "text"), _c("name", "text"), _c("notes", "sealed", True),
                                     _c("created_at", "int"))),
    Table("claims", ("id",), (_c("id", "text"), _c("issuer", "text"), _c("data", "sealed"),
                              _c("valid_until", "int", True), _c("imported_at", "int"))),
    Table("intents", ("intent_id",), (_c("intent_id", "text"), _c("category", "text"), _c("seed", "sealed"),
                                      _c("token", "sealed"), _c("body", "sealed"),
                                      _c("status", "text", enum=INTENT_STATUSES), _c("expires_at", "int"),
                                      _c("created_at", "int"))),
    Table("offers", ("offer_id",), (_c("offer_id", "text"), _c("intent_id", "text"), _c("vendor", "text"),
                                    _c("vendor_did", "text"), _c("token", "text"), _c("body", "json"),
                                    _c("status", "text", enum=OFFER_STATUSES), _c("received_at", "int"),
                                    _c("snooze_until", "int", True)),
          # (intent, vendor): the intake counts a vendor's offers per intent for every offer
          indexes=(("offers_intent_vendor", ("intent_id", "vendor")),)),
    Table("vendors", ("vendor",), (_c("vendor", "text"), _c("did", "text"), _c("profile_token", "text"),
                                   _c("profile", "json"), _c("pinned_at", "int"), _c("pending_did", "text", True),
                                   _c("pending_token", "text", True), _c("pending_profile", "json", True),
                                   _c("status", "text", enum=VENDOR_STATUSES), _c("updated_at", "int"))),
    Table("rejections", ("reason", "vendor"), (_c("reason", "text"), _c("vendor", "text"), _c("count", "int"))),
    Table("rejection_windows", ("reason", "vendor"), (_c("reason", "text"), _c("vendor", "text"),
                                                      _c("window_start", "int"), _c("count", "int"))),
    Table("agreements", ("agreement_id",), (_c("agreement_id", "text"), _c("intent_id", "text"),
                                            _c("offer_id", "text"), _c("vendor", "text"), _c("token", "sealed"),
                                            _c("body", "sealed"), _c("status", "text", enum=AGREEMENT_STATUSES),
                                            _c("countersignature", "text", True), _c("created_at", "int"),
                                            _c("updated_at", "int"))),
    Table("disclosures", ("id",), (_c("id", "text"), _c("agreement_id", "text"), _c("vendor", "text"),
                                   _c("fields", "sealed"), _c("token", "text"), _c("created_at", "int"))),
    Table("revocations", ("agreement_id",), (_c("agreement_id", "text"), _c("token", "text"),
                                             _c("delete_data", "int"), _c("created_at", "int"),
                                             _c("ack_token", "text", True), _c("deleted", "int", True),
                                             _c("acked_at", "int", True))),
    Table("rules", ("id",), (_c("id", "int"), _c("value", "sealed"))),
    Table("reviews", ("id",), (_c("id", "text"), _c("vendor", "text"), _c("agreement_id", "text", True),
                               _c("data", "sealed"), _c("created_at", "int"))),
    # payload is TEXT: erase writes the messages still to send back in the clear for a moment
    Table("outbox", ("id",), (_c("id", "int"), _c("topic", "text"), _c("payload", "sealed", sql_type="TEXT"),
                              _c("retain", "int"), _c("created_at", "int"), _c("sent_at", "int", True),
                              # when the message's signature expires: a sealed (JWE) payload
                              # cannot be read for it, and every publish carries Message Expiry
                              _c("expires_at", "int", True)),
          autoincrement=True),
    Table("seen_messages", ("id",), (_c("id", "text"), _c("exp", "int"))),
    Table("audit", ("seq",), (_c("seq", "int"), _c("created_at", "int"), _c("event_type", "text"),
                              _c("data", "json"), _c("prev_hash", "text"), _c("entry_hash", "text"),
                              _c("signature", "text")), exported=False),
    Table("audit_head", ("id",), (_c("id", "int"), _c("count", "int"), _c("last_hash", "text"),
                                  _c("signature", "text")), exported=False, check="id = 1"),
)

ALL_TABLES: tuple[str, ...] = tuple(t.name for t in SCHEMA)

# The export/import spec: table -> (primary key, ((column, kind[?]), ...)), in export order.
TABLES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    t.name: (t.pk, tuple((c.name, c.spec) for c in t.columns)) for t in SCHEMA if t.exported}

ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    (t.name, c.name): c.enum for t in SCHEMA for c in t.columns if c.enum}

# append-only: the box itself never updates or deletes audit rows; import, restore and erase
# lift the delete guard inside their one transaction (connection.audit_rows_deletable).
AUDIT_NO_UPDATE = ("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN "
                   "SELECT RAISE(ABORT, 'audit is append-only'); END")
AUDIT_NO_DELETE = ("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN "
                   "SELECT RAISE(ABORT, 'audit is append-only'); END")


def _column_sql(t: Table, c: Column) -> str:
    sql = f"{c.name} {c.sql_type or _SQL_TYPES[c.kind]}"
    if t.pk == (c.name,):
        sql += " PRIMARY KEY" + (" AUTOINCREMENT" if t.autoincrement else "")
        return sql + (f" CHECK ({t.check})" if t.check else "")
    return sql if c.nullable else sql + " NOT NULL"


def table_ddl(t: Table) -> list[str]:
    """CREATE TABLE (and its indexes) for one table."""
    parts = [_column_sql(t, c) for c in t.columns]
    if len(t.pk) > 1:
        parts.append(f"PRIMARY KEY ({', '.join(t.pk)})")
    out = [f"CREATE TABLE {t.name} ({', '.join(parts)})"]
    out += [f"CREATE INDEX {name} ON {t.name}({', '.join(cols)})" for name, cols in t.indexes]
    return out


def ddl() -> list[str]:
    """Every statement that creates the current schema on an empty database."""
    return [s for t in SCHEMA for s in table_ddl(t)] + [AUDIT_NO_UPDATE, AUDIT_NO_DELETE]


def sealed_columns(table: str) -> tuple[str, ...]:
    """The columns of `table` that hold ciphertext (for docs and tests)."""
    return tuple(c.name for t in SCHEMA if t.name == table for c in t.columns if c.kind == "sealed")


def clear_columns(table: str) -> tuple[str, ...]:
    """The columns of `table` stored in the clear: what a copied store.db shows without a key."""
    return tuple(c.name for t in SCHEMA if t.name == table for c in t.columns if c.kind != "sealed")
