"""The box's personal data store: SQLite (WAL) on disk, personal values sealed with AES-GCM,
every change committed together with its audit entry.

Why everything goes through `Store`: the daemon, the CLI and the companion app all change data
only through it, so provenance rules, encryption and auditing cannot be bypassed. Module map
(docs/store.md): schema (the one table declaration), migrations, connection (open, transactions,
sealing), checks (errors, value and import checks), one module per aggregate (profile, market,
vendors, personal, outbox), snapshot (export/import rows), facade (`Store`).
"""
from ..keystore import KeyFileError
from .checks import MAX_NAME, ProvenanceError, StoreError, check_tables
from .connection import DB_FILE
from .facade import Store
from .migrations import SCHEMA_VERSION
from .schema import TABLES
from .vendors import MAX_REJECTION_PAIRS, REJECTION_WINDOW

__all__ = ["Store", "StoreError", "ProvenanceError", "TABLES", "check_tables", "SCHEMA_VERSION",
           "KeyFileError", "DB_FILE", "REJECTION_WINDOW", "MAX_REJECTION_PAIRS", "MAX_NAME"]
