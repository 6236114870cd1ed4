"""The store's connection: opening store.db (WAL, durable, migrated), transactions, sealing
values with the data key, and the clock.

Why here and nowhere else: every aggregate module builds on `StoreBase`, so there is one way to
begin a transaction (joining an outer one, so a change and its audit entry commit together) and
one way to seal a value (bound to its table, column and row).
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from vrm_protocol import Identity

from ..audit import AuditLog
from ..keystore import Cipher, KeyProvider, Keys
from .migrations import migrate
from .schema import AUDIT_NO_DELETE

log = logging.getLogger(__name__)

DB_FILE = "store.db"


def _set_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switching to WAL can report "database is locked" while another process opens the same
    new file, busy timeout or not; retry briefly instead of failing the open."""
    for i in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05)


def connect(db: Path) -> sqlite3.Connection:
    """Open (creating, 0600) and migrate store.db; the connection is closed again on failure."""
    fresh_file = not db.exists()
    # One thread at a time, but not always the opener: the daemon hands the store to its worker.
    conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        if fresh_file:
            os.chmod(db, 0o600)
        _set_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")   # a committed audit entry survives power loss
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")   # deleted rows are zeroed, not left in pages
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


FULL = "full"      # the disk (or the database's quota) is full: nothing can be stored until space returns
FAILING = "error"  # the store fails for another reason (locked, I/O error, read-only ...)


def storage_fault(exc: BaseException) -> str | None:
    """What a failure says about the store: FULL, FAILING, or None (not the store's fault).
    Pure; the daemon pauses its intake on either fault instead of acknowledging what it lost."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FULL
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        return FULL if "database or disk is full" in text or "disk is full" in text else FAILING
    if isinstance(exc, OSError):
        return FAILING
    return None


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction; joins an outer one (so a change and its audit entry commit together)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        _undo(conn, "ROLLBACK")
        raise


def _undo(conn: sqlite3.Connection, statement: str) -> None:
    """Roll back after an error without hiding it: SQLite rolls back by itself on some errors
    (SQLITE_FULL, SQLITE_IOERR), and a second rollback would raise "no transaction is active"."""
    if conn.in_transaction:
        try:
            conn.execute(statement)
        except sqlite3.Error as rb:
            log.warning("%s failed after an error (%s); the error follows", statement, rb)


class Savepoint:
    """A part of the open transaction that can be undone alone."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def discard(self) -> None:
        """Undo what was written since the savepoint (the transaction goes on)."""
        self._conn.execute("ROLLBACK TO vrm_part")


@contextmanager
def savepoint(conn: sqlite3.Connection) -> Iterator[Savepoint]:
    """Inside a transaction: one message of a group commit, undone alone when it is refused or
    fails, so the others still commit together."""
    conn.execute("SAVEPOINT vrm_part")
    try:
        yield Savepoint(conn)
    except BaseException:
        _undo(conn, "ROLLBACK TO vrm_part")
        raise
    finally:
        if conn.in_transaction:
            conn.execute("RELEASE vrm_part")


@contextmanager
def audit_rows_deletable(conn: sqlite3.Connection) -> Iterator[None]:
    """Lift the audit log's delete guard for the body only (import, restore, erase replace the
    whole log); call inside a transaction so the guard is never missing after a commit."""
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    yield
    conn.execute(AUDIT_NO_DELETE)


def aad(table: str, column: str, key: tuple[Any, ...]) -> str:
    """The associated data of a sealed value: a ciphertext moved to another cell fails."""
    return f"vrmbox/{table}.{column}:" + "\x1f".join(str(k) for k in key)


class StoreBase:
    """What every aggregate of the store shares: connection, keys, clock, audit log."""

    def __init__(self, data_dir: Path, conn: sqlite3.Connection, keys: Keys,
                 clock: Callable[[], float], provider: KeyProvider) -> None:
        self.data_dir = data_dir
        self._conn = conn
        self._keys = keys
        self._provider = provider
        self._cipher = Cipher(keys.data_key)
        self._clock = clock
        self.audit = AuditLog(conn, lambda: self._keys.device, clock)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def device_identity(self) -> Identity:
        return self._keys.device

    def now(self) -> int:
        return int(self._clock())

    def _tx(self) -> Any:
        return transaction(self._conn)

    def transaction(self) -> Any:
        """Group several store calls (and their audit entries) into one atomic commit."""
        return self._tx()

    def savepoint(self) -> Any:
        """Inside `transaction()`: a part that can be undone alone (see `savepoint`)."""
        return savepoint(self._conn)

    def _seal(self, table: str, column: str, key: tuple[Any, ...], value: Any) -> bytes:
        return self._cipher.seal_json(value, aad(table, column, key))

    def _open(self, table: str, column: str, key: tuple[Any, ...], blob: bytes | None) -> Any:
        if blob is None:
            return None
        return self._cipher.open_json(blob, aad(table, column, key))

    def record_event(self, event_type: str, data: dict[str, Any] | None = None) -> None:
        """Audit an event that changes no table (phone paired/unpaired, export ...)."""
        with self._tx():
            self.audit.append(event_type, data or {})
