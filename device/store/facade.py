"""`Store`: the one object through which the daemon, the CLI and the companion app change data.

Why a facade over mixins: callers keep one API (the contract in docs/store.md) while each concern
lives in its own module: profile.py, market.py, vendors.py, personal.py, outbox.py,
snapshot.py, on top of connection.py. One `Store` per thread (one sqlite3 connection each).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from .. import keystore
from ..keystore import KeyFileError, KeyProvider
from .connection import DB_FILE, connect, transaction
from .market import MarketStore
from .personal import PersonalStore
from .profile import ProfileStore
from .snapshot import SnapshotStore

log = logging.getLogger(__name__)


class Store(ProfileStore, MarketStore, PersonalStore, SnapshotStore):
    """See module docstring. Construct with `Store.open(data_dir)`."""

    @classmethod
    def open(cls, data_dir: Path | str, clock: Callable[[], float] = time.time,
             keys: KeyProvider | None = None) -> "Store":
        """Open (creating on first use) the store in `data_dir`; migrates the schema.

        `keys` says where the data key and device key come from (default: the files in
        `data_dir/keys/`); the meta table records their fingerprint and did, so a missing,
        swapped or wrongly unlocked key is a KeyFileError, never garbage or a silent new key.
        """
        data_dir = Path(data_dir)
        provider = keys if keys is not None else keystore.FileKeyProvider(data_dir)
        keystore.ensure_private_dir(data_dir)
        conn = connect(data_dir / DB_FILE)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            provider.settle_device_key(meta.get("device_did"))
            loaded = provider.load(data_key_fp=meta.get("data_key_fp"), device_did=meta.get("device_did"))
            fp = keystore.fingerprint(loaded.data_key)
            if meta.get("data_key_fp", fp) != fp:
                raise KeyFileError(f"{provider.data_key_name} does not belong to this store")
            if meta.get("device_did", loaded.device.did) != loaded.device.did:
                raise KeyFileError(f"{provider.device_key_name} does not belong to this store")
            fresh_store = "data_key_fp" not in meta or "device_did" not in meta
            if fresh_store:
                with transaction(conn):
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('data_key_fp', ?)", (fp,))
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('device_did', ?)", (loaded.device.did,))
        except BaseException:
            conn.close()
            raise
        store = cls(data_dir, conn, loaded, clock, provider)
        if fresh_store:  # a signed empty head: deleting the whole log later is detectable
            with store._tx():
                store.audit.resign_head()
        store._reseal_outbox()
        return store

    def __enter__(self) -> "Store":
        return self

    def prune(self, keep_sent_s: int = 7 * 86400) -> int:
        """Forget what only protects against replays that can no longer happen (expired message
        ids) and outbox rows sent long ago. Returns the rows deleted."""
        now = self.now()
        with self._tx():
            a = self._conn.execute("DELETE FROM seen_messages WHERE exp < ?", (now - 300,)).rowcount
            b = self._conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                                   (now - keep_sent_s,)).rowcount
        return a + b


__all__ = ["Store"]
