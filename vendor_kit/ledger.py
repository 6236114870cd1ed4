"""The vendor's SQLite ledger: intents seen, offers sent, agreements, disclosures, revocations.

Why it looks like this:
- Several workers may share one ledger (same directory, MQTT shared subscription), so the
  database runs in WAL mode, and every decision is one IMMEDIATE transaction. `INSERT OR
  IGNORE` on the intent id decides which worker answers an intent: the intent row is committed
  *before* any offer is published, so an intent is answered at most once, across workers and
  restarts. A remembered withdrawal is checked inside that same transaction.
- Waiting for another worker's lock is done here, in short steps (SQLite's own busy wait is
  only STEP_BUSY_MS), so that `interrupt()` — e.g. on SIGTERM — ends any wait at once instead
  of leaving a thread stuck in SQLite for the whole BUSY_TIMEOUT_S.
- Outgoing messages are written to an `outbox` in the same transaction as the state change
  and marked sent on PUBACK; after a crash or a broker loss the unsent rows are published
  again (same message ids, so a duplicate is harmless to the box).
- Revocation with delete=true removes the disclosure row with `secure_delete` on (freed
  bytes are zeroed) and then truncates the WAL, so the plaintext is gone from the files. The
  ack saying `deleted: true` is held back (table `purge`) until that truncation succeeded; a
  checkpoint blocked by a reader is retried by the worker's housekeeping.
- Nothing grows without bound: expired withdrawals, intents, offers and outbox rows are
  pruned; an offer takes one agreement and an agreement one revocation.
- Every copy of an offer handed to MQTT takes the next number of one send order (table
  `send_order`, inside the transaction that decides the send, so workers sharing the ledger
  never share a number): one publisher's messages reach a box in order, so an intent's receipt
  says which older copies of its other offers were lost (core.plan_resends decides).
- An offer given up on is sent once more when its intent is seen again (its box is alive), at
  most core.REARM_LIMIT times (`offers.rearms`; core.plan_rearms decides).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from vrm_protocol import ProtocolError
from vrm_protocol.codec import CLOCK_SKEW, MAX_LIFETIME

from vrm_protocol import token_hash

from .core import (DAY, AgreementRecord, DisclosureRecord, GivenUp, IntentAnswer, IntentRecord, OfferRecord,
                   Outgoing, Pending, Receipted, Receipts, Resend, ResendPolicy, RevocationRecord, WithdrawalRecord)

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 5
BUSY_TIMEOUT_S = 30.0      # how long a write waits, in all, for other workers' transactions
STEP_BUSY_MS = 100         # SQLite's own busy wait per attempt (also bounds a blocked checkpoint)
PRUNE_MARGIN_S = CLOCK_SKEW + 600   # keep rows a while past exp: a late copy is refused as expired

T = TypeVar("T")

_INTENTS = """CREATE TABLE IF NOT EXISTS intents (
  intent TEXT PRIMARY KEY, category TEXT NOT NULL, signer TEXT NOT NULL, terms_id TEXT NOT NULL,
  terms_sha256 TEXT NOT NULL, attributes TEXT NOT NULL, received_at INTEGER NOT NULL,
  status TEXT NOT NULL, offers INTEGER NOT NULL, client_id TEXT NOT NULL, exp INTEGER)"""
_WITHDRAWALS = """CREATE TABLE IF NOT EXISTS withdrawals (
  intent TEXT NOT NULL, signer TEXT NOT NULL, category TEXT NOT NULL, received_at INTEGER NOT NULL,
  exp INTEGER NOT NULL, PRIMARY KEY (intent, signer))"""
_REVOCATIONS = """CREATE TABLE IF NOT EXISTS revocations (
  agreement TEXT PRIMARY KEY, id TEXT NOT NULL, intent TEXT NOT NULL, delete_data INTEGER NOT NULL,
  reason TEXT, received_at INTEGER NOT NULL, ack_id TEXT NOT NULL, ack_topic TEXT NOT NULL,
  ack_token TEXT NOT NULL, ack_exp INTEGER NOT NULL)"""
_SCHEMA = [_INTENTS, _WITHDRAWALS, _REVOCATIONS, """
CREATE TABLE IF NOT EXISTS offers (
  id TEXT PRIMARY KEY, intent TEXT NOT NULL REFERENCES intents(intent), intent_signer TEXT NOT NULL,
  sku TEXT NOT NULL, name TEXT NOT NULL, price REAL NOT NULL, currency TEXT NOT NULL,
  valid_until INTEGER NOT NULL, terms_id TEXT NOT NULL, terms_sha256 TEXT NOT NULL,
  decision TEXT NOT NULL, token TEXT NOT NULL, created_at INTEGER NOT NULL, client_id TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS offers_intent ON offers(intent)",
    "CREATE INDEX IF NOT EXISTS offers_valid ON offers(valid_until)", """
CREATE TABLE IF NOT EXISTS agreements (
  id TEXT PRIMARY KEY, intent TEXT NOT NULL, offer TEXT NOT NULL REFERENCES offers(id),
  signer TEXT NOT NULL, fields TEXT NOT NULL, purpose TEXT NOT NULL, duration_days INTEGER NOT NULL,
  terms_id TEXT NOT NULL, terms_sha256 TEXT NOT NULL, received_at INTEGER NOT NULL,
  cs_id TEXT NOT NULL, cs_topic TEXT NOT NULL, cs_token TEXT NOT NULL, cs_exp INTEGER NOT NULL,
  revoked_at INTEGER, revocation TEXT, deleted INTEGER NOT NULL DEFAULT 0, client_id TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS agreements_offer ON agreements(offer)", """
CREATE TABLE IF NOT EXISTS disclosures (
  agreement TEXT PRIMARY KEY REFERENCES agreements(id), intent TEXT NOT NULL, message TEXT NOT NULL,
  fields TEXT NOT NULL, received_at INTEGER NOT NULL)""", """
CREATE TABLE IF NOT EXISTS outbox (
  id TEXT PRIMARY KEY, topic TEXT NOT NULL, token TEXT NOT NULL, exp INTEGER NOT NULL,
  retain INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, client_id TEXT NOT NULL,
  sent_at INTEGER)""",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent_at) WHERE sent_at IS NULL",
    "CREATE INDEX IF NOT EXISTS outbox_exp ON outbox(exp)",
    # Deleted personal data may still sit in the WAL: these ids (acks saying deleted: true, or a
    # marker) wait until a WAL checkpoint+truncate has succeeded; held acks are not sent before.
    "CREATE TABLE IF NOT EXISTS purge (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL)",
]


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """v1 keyed withdrawals by intent only and revocations by message id (review items 4, 5)."""
    db.execute("ALTER TABLE intents ADD COLUMN exp INTEGER")
    db.execute("ALTER TABLE withdrawals RENAME TO withdrawals_v1")
    db.execute(_WITHDRAWALS)
    db.execute("INSERT OR IGNORE INTO withdrawals (intent, signer, category, received_at, exp) "
               "SELECT intent, signer, category, received_at, received_at + ? FROM withdrawals_v1", (MAX_LIFETIME,))
    db.execute("DROP TABLE withdrawals_v1")
    db.execute("ALTER TABLE revocations RENAME TO revocations_v1")
    db.execute(_REVOCATIONS)
    db.execute("INSERT OR IGNORE INTO revocations (agreement, id, intent, delete_data, reason, received_at, ack_id, "
               "ack_topic, ack_token, ack_exp) SELECT agreement, id, intent, delete_data, reason, received_at, "
               "ack_id, ack_topic, ack_token, ack_exp FROM revocations_v1 ORDER BY received_at")
    db.execute("DROP TABLE revocations_v1")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """v3: offers wait for the box's receipt (hash to match it, when to send again). Offers
    from before receipts are never re-sent (resend_at stays NULL)."""
    for col in ("hash TEXT", "receipted_at REAL", "resends INTEGER NOT NULL DEFAULT 0", "resend_at REAL",
                "last_sent REAL", "first_sent REAL"):
        db.execute(f"ALTER TABLE offers ADD COLUMN {col}")
    for oid, token in db.execute("SELECT id, token FROM offers").fetchall():
        db.execute("UPDATE offers SET hash = ? WHERE id = ?", (token_hash(token), oid))
    db.execute("CREATE INDEX IF NOT EXISTS offers_hash ON offers(intent, hash)")
    db.execute("CREATE INDEX IF NOT EXISTS offers_resend ON offers(resend_at) WHERE receipted_at IS NULL")
    db.execute("CREATE INDEX IF NOT EXISTS offers_receipted ON offers(receipted_at) WHERE receipted_at IS NOT NULL")


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    """v4: a send order per copy (one publisher's messages reach the box in order, so a receipt
    says which older copies were lost) and the give-up. Offers from before get their insertion
    order, which is the order they were first published in."""
    for col in ("first_seq INTEGER", "last_seq INTEGER", "floor_seq INTEGER", "gave_up_at REAL"):
        db.execute(f"ALTER TABLE offers ADD COLUMN {col}")
    db.execute("UPDATE offers SET first_seq = rowid, last_seq = rowid, floor_seq = rowid")
    db.execute("CREATE TABLE IF NOT EXISTS send_order (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)")
    db.execute("INSERT OR IGNORE INTO send_order (id, n) SELECT 1, COALESCE(MAX(rowid), 0) FROM offers")
    db.execute("CREATE INDEX IF NOT EXISTS offers_floor ON offers(floor_seq) WHERE receipted_at IS NOT NULL")


def _migrate_4_to_5(db: sqlite3.Connection) -> None:
    """v5: how many times a given-up offer was sent again because its intent was seen again."""
    db.execute("ALTER TABLE offers ADD COLUMN rearms INTEGER NOT NULL DEFAULT 0")


def _next_seqs(db: sqlite3.Connection, n: int) -> list[int]:
    """The next `n` numbers of the ledger's send order (inside the caller's transaction, so two
    workers never share one)."""
    if n <= 0:
        return []
    db.execute("UPDATE send_order SET n = n + ? WHERE id = 1", (n,))
    last = db.execute("SELECT n FROM send_order WHERE id = 1").fetchone()[0]
    return list(range(last - n + 1, last + 1))


class LedgerBusy(sqlite3.OperationalError):
    """The ledger stayed locked by another worker for BUSY_TIMEOUT_S, or it was interrupted.
    Nothing was written: the message can be handled again later."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _retry_locked(fn: Callable[[], None], timeout: float = BUSY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class Ledger:
    """One connection to the vendor's ledger. Thread-safe by a lock (paho calls from its thread)."""

    def __init__(self, path: Path | str, client_id: str = "cli", busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.client_id = client_id
        self.busy_timeout_s = busy_timeout_s
        self.resend = ResendPolicy()   # the worker sets its own: when a sent offer is due again
        self._interrupted = False   # a plain flag: interrupt() may be called from a signal handler
        self._local = threading.local()   # per-thread cap on lock waits (max_wait)
        if not self.path.exists():  # personal data inside: never world-readable, not even briefly
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=STEP_BUSY_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {STEP_BUSY_MS}")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA secure_delete = ON")
        self._db.execute("PRAGMA foreign_keys = ON")
        _retry_locked(self._setup)

    def _setup(self) -> None:
        # Switching to WAL needs an exclusive lock and SQLite does not always wait for it (busy
        # handler skipped), so two workers opening a new ledger at once need the retry around this.
        if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._db.execute("PRAGMA journal_mode = WAL")
        with self._tx():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                if version == 1:
                    _migrate_1_to_2(self._db)
                for stmt in _SCHEMA:  # not executescript: it COMMITs
                    self._db.execute(stmt)
                if version < 3:
                    _migrate_2_to_3(self._db)   # a new ledger too: _SCHEMA is the v2 one
                if version < 4:
                    _migrate_3_to_4(self._db)
                _migrate_4_to_5(self._db)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def in_dir(cls, directory: Path | str, client_id: str = "cli") -> "Ledger":
        return cls(Path(directory) / LEDGER_FILE, client_id)

    def interrupt(self, on: bool = True) -> None:
        """Make every wait for another worker's lock give up at once (LedgerBusy). Only sets a
        flag, so it is safe in a signal handler; `interrupt(False)` undoes it."""
        self._interrupted = on

    @contextmanager
    def max_wait(self, seconds: float) -> Iterator[None]:
        """Within this block, this thread waits at most `seconds` for a lock (then LedgerBusy):
        for a thread that must stay responsive, e.g. the worker's run loop."""
        before = getattr(self._local, "cap", None)
        self._local.cap = seconds
        try:
            yield
        finally:
            self._local.cap = before

    def close(self, timeout: float = 2.0) -> None:
        """Close the connection. If another thread still holds the ledger after `timeout`
        (a network thread that did not stop), leave it open: the process is exiting and SQLite
        needs no close to stay consistent, whereas waiting could hang the exit."""
        self._interrupted = True
        if not self._lock.acquire(timeout=timeout):
            log.warning("ledger still in use by another thread; not closing it")
            return
        try:
            self._db.close()
        finally:
            self._lock.release()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------- locking
    def _attempts(self) -> Iterator[None]:
        """Yield once per attempt; sleep between them; raise LedgerBusy when time is up."""
        cap = getattr(self._local, "cap", None)
        limit = self.busy_timeout_s if cap is None else min(cap, self.busy_timeout_s)
        deadline = time.monotonic() + limit
        delay = 0.005
        while True:
            yield
            if self._interrupted:
                raise LedgerBusy("ledger wait interrupted (stopping)")
            if time.monotonic() > deadline:
                raise LedgerBusy(f"ledger locked by another worker for over {limit:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for other writers; returns holding self._lock."""
        for _ in self._attempts():
            self._lock.acquire()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                self._lock.release()
                if not _is_busy(exc):
                    raise
            except BaseException:
                self._lock.release()
                raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so read-then-write is atomic."""
        self._begin()
        try:
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        finally:
            self._lock.release()

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        for _ in self._attempts():  # WAL readers rarely wait; when they do, interruptibly
            with self._lock:
                try:
                    return fn(self._db)
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
        raise AssertionError("unreachable")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self._read(lambda db: db.execute(sql, args).fetchone())

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._read(lambda db: db.execute(sql, args).fetchall())

    # -------------------------------------------------------------------------- outbox
    def _enqueue(self, db: sqlite3.Connection, out: Outgoing, now: int) -> None:
        db.execute("INSERT OR IGNORE INTO outbox (id, topic, token, exp, retain, created_at, client_id) "
                   "VALUES (?,?,?,?,?,?,?)", (out.msg_id, out.topic, out.token, out.exp, int(out.retain),
                                              now, self.client_id))

    def mark_sent(self, msg_id: str, now: int) -> None:
        """The broker took it; an offer's wait for its receipt starts now."""
        with self._tx() as db:
            if db.execute("UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL", (now, msg_id)).rowcount:
                db.execute("UPDATE offers SET resend_at = MAX(resend_at, ?) WHERE id = ? AND resends = 0 "
                           "AND receipted_at IS NULL AND resend_at IS NOT NULL", (now + self.resend.first_s, msg_id))

    def unsent(self, now: int, grace_s: int = 30, min_age_s: int = 0) -> list[Outgoing]:
        """Unexpired messages not yet acknowledged by the broker: ours older than `min_age_s`, or
        another worker's older than `grace_s` (it may have died between commit and publish).
        Acks held until deleted data has left the WAL are not included."""
        rows = self._all("SELECT * FROM outbox WHERE sent_at IS NULL AND exp > ? AND "
                         "id NOT IN (SELECT id FROM purge) AND "
                         "((client_id = ? AND created_at <= ?) OR created_at <= ?) ORDER BY created_at",
                         now, self.client_id, now - min_age_s, now - grace_s)
        return [_outgoing(r) for r in rows]

    # -------------------------------------------------------------------------- intents
    def intent(self, intent_id: str) -> IntentRecord | None:
        r = self._one("SELECT * FROM intents WHERE intent = ?", intent_id)
        if r is None:
            return None
        return IntentRecord(intent=r["intent"], category=r["category"], signer=r["signer"],
                            terms_id=r["terms_id"], terms_sha256=r["terms_sha256"],
                            attributes=json.loads(r["attributes"]), received_at=r["received_at"],
                            status=r["status"], exp=r["exp"] or 0)

    def withdrawal_signer(self, intent_id: str) -> str | None:
        """A signer of a remembered withdrawal of this (not yet seen) intent, if any."""
        r = self._one("SELECT signer FROM withdrawals WHERE intent = ? ORDER BY received_at", intent_id)
        return r["signer"] if r else None

    def claim(self, answer: IntentAnswer, now: int, sent_clock: float | None = None) -> IntentAnswer | None:
        """Record the intent and its offers, unless another worker (or an earlier run) has: then
        None. A withdrawal by the intent's own key that arrived first is checked in the same
        transaction: the intent is then recorded as withdrawn, and the answer has no offers."""
        i = answer.intent
        sent = now if sent_clock is None else sent_clock
        with self._tx() as db:
            if db.execute("SELECT 1 FROM intents WHERE intent = ?", (i.intent,)).fetchone():
                return None
            if db.execute("SELECT 1 FROM withdrawals WHERE intent = ? AND signer = ?",
                          (i.intent, i.signer)).fetchone():
                answer = IntentAnswer(replace(i, status="withdrawn"), ())
                i = answer.intent
            db.execute(
                "INSERT INTO intents (intent, category, signer, terms_id, terms_sha256, attributes, "
                "received_at, status, offers, client_id, exp) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (i.intent, i.category, i.signer, i.terms_id, i.terms_sha256, json.dumps(i.attributes),
                 i.received_at, i.status, len(answer.offers), self.client_id, i.exp or None))
            db.execute("DELETE FROM withdrawals WHERE intent = ?", (i.intent,))  # the intent row rules now
            # numbered in the order the worker publishes them (answer order)
            for o, seq in zip(answer.offers, _next_seqs(db, len(answer.offers))):
                db.execute("INSERT INTO offers (id, intent, intent_signer, sku, name, price, currency, valid_until, "
                           "terms_id, terms_sha256, decision, token, created_at, client_id, hash, resend_at, "
                           "last_sent, first_sent, first_seq, last_seq, floor_seq) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (o.id, o.intent, o.intent_signer, o.sku, o.name, o.price, o.currency, o.valid_until,
                            o.terms_id, o.terms_sha256, o.decision, o.token, now, self.client_id, o.hash,
                            now + self.resend.first_s, sent, sent, seq, seq, seq))
                self._enqueue(db, o.outgoing(), now)
        return answer

    def claim_intent(self, answer: IntentAnswer, now: int) -> bool:
        """`claim`, as a yes/no: did this call record the intent?"""
        return self.claim(answer, now) is not None

    def record_withdrawal(self, w: WithdrawalRecord) -> None:
        """Mark a known intent withdrawn (and drop its unsent offers), or remember the
        withdrawal, per signer, until the intent arrives or the withdrawal expires."""
        with self._tx() as db:
            cur = db.execute("UPDATE intents SET status = 'withdrawn' WHERE intent = ? AND signer = ?",
                             (w.intent, w.signer))
            if cur.rowcount:
                db.execute("DELETE FROM outbox WHERE sent_at IS NULL AND id IN "
                           "(SELECT id FROM offers WHERE intent = ?)", (w.intent,))
                # the box no longer takes offers on it: copies would only be refused
                db.execute("UPDATE offers SET resend_at = NULL WHERE intent = ?", (w.intent,))
            elif not db.execute("SELECT 1 FROM intents WHERE intent = ?", (w.intent,)).fetchone():
                db.execute("INSERT OR IGNORE INTO withdrawals (intent, signer, category, received_at, exp) "
                           "VALUES (?,?,?,?,?)", (w.intent, w.signer, w.category, w.received_at,
                                                  w.exp or w.received_at + MAX_LIFETIME))

    # -------------------------------------------------------------------------- offers
    def offer(self, offer_id: str) -> OfferRecord | None:
        r = self._one("SELECT * FROM offers WHERE id = ?", offer_id)
        return None if r is None else _offer(r)

    # -------------------------------------------------------------------------- receipts
    def mark_receipted(self, intent_id: str, hashes: tuple[str, ...] | list[str], now: float) -> int:
        """The box says it holds these offers (by token hash): stop re-sending them. Returns how
        many of ours were waiting. Hashes we never sent (fillers, other vendors') match nothing.
        The intent's offers whose latest copy went out before the first copy the box may have
        stored of one of these are looked at once their own receipt would have come
        (`ResendPolicy.look_after_receipt`): if it has not, they were lost."""
        hashes = list(dict.fromkeys(hashes))[:64]
        if not hashes:
            return 0
        marks = ",".join("?" * len(hashes))
        with self._tx() as db:
            rows = db.execute(f"SELECT id, receipted_at, floor_seq FROM offers WHERE intent = ? AND hash IN ({marks})",
                              (intent_id, *hashes)).fetchall()
            new = [r for r in rows if r["receipted_at"] is None]
            if not new:   # copies of old receipts (or receipts the box re-signs for replays of a
                return 0  # stored offer) change nothing: the box looks "flowing" only on news
            ids = [r["id"] for r in new]
            idm = ",".join("?" * len(ids))
            db.execute(f"UPDATE offers SET receipted_at = ?, resend_at = NULL WHERE id IN ({idm})", (now, *ids))
            db.execute(f"UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND id IN ({idm})", (now, *ids))
            passed = max(int(r["floor_seq"] or 0) for r in new)
            db.execute("UPDATE offers SET resend_at = MIN(resend_at, ?) WHERE intent = ? AND receipted_at IS NULL "
                       "AND resend_at IS NOT NULL AND last_seq < ?",
                       (self.resend.look_after_receipt(now), intent_id, passed))
        return len(ids)

    def receipted(self, intent_ids: list[str] | set[str]) -> Receipts:
        """What the receipts say about these intents, and over all (core.plan_resends reads it)."""
        return self._read(lambda db: _receipted(db, intent_ids))

    def take_resends(self, now: float, plan: Callable[[list[Pending], Receipts], list[Resend]],
                     limit: int = 200) -> list[Resend]:
        """Due offers (sent, not receipted, their time come), planned by `plan` (core.plan_resends)
        and rescheduled in one transaction, so two workers sharing the ledger do not both send.
        Returns the offers to send now, numbered in the send order in the order returned (send
        them in that order), and those given up. Offers the plan leaves out (expired) are not
        looked at again."""
        with self._tx() as db:
            rows = db.execute("SELECT offers.*, intents.exp AS intent_exp FROM offers "
                              "JOIN outbox ON outbox.id = offers.id "
                              "LEFT JOIN intents ON intents.intent = offers.intent "
                              "WHERE offers.receipted_at IS NULL AND offers.resend_at IS NOT NULL "
                              "AND offers.resend_at <= ? AND outbox.sent_at IS NOT NULL "
                              "ORDER BY offers.resend_at, offers.last_seq LIMIT ?", (now, limit)).fetchall()
            due = [Pending(_offer(r), r["resends"], r["last_sent"] or 0.0, int(r["last_seq"] or 0),
                           float(r["intent_exp"] or 0)) for r in rows]
            resends = plan(due, _receipted(db, {p.offer.intent for p in due}))
            sending = [r for r in resends if r.send]
            for r, seq in zip(sending, _next_seqs(db, len(sending))):
                # a copy sent because the earlier ones were found lost: only it can be the stored one
                db.execute("UPDATE offers SET resends = ?, resend_at = ?, last_sent = ?, last_seq = ?, "
                           "floor_seq = CASE WHEN ? THEN ? ELSE floor_seq END WHERE id = ?",
                           (r.resends, r.next_at, now, seq, int(r.lost), seq, r.outgoing.msg_id))
            for r in resends:
                if r.gave_up:
                    db.execute("UPDATE offers SET gave_up_at = ?, resend_at = NULL WHERE id = ?",
                               (now, r.outgoing.msg_id))
                elif not r.send:
                    db.execute("UPDATE offers SET resend_at = ? WHERE id = ?", (r.next_at, r.outgoing.msg_id))
            planned = {r.outgoing.msg_id for r in resends}
            for p in due:
                if p.offer.id not in planned:
                    db.execute("UPDATE offers SET resend_at = NULL WHERE id = ?", (p.offer.id,))
        return [r for r in resends if r.send or r.gave_up]

    def take_rearms(self, intent_id: str, now: float,
                    plan: Callable[[list[GivenUp]], list[GivenUp]]) -> list[Outgoing]:
        """The intent was seen again: its given-up offers, planned by `plan` (core.plan_rearms),
        counted and numbered in the send order in one transaction (two workers sharing the ledger
        do not both send). Returns the copies to send now, in that order. The timer does not
        start again: `gave_up_at` stays, `resend_at` stays NULL."""
        with self._tx() as db:
            rows = db.execute("SELECT offers.*, intents.exp AS intent_exp, intents.status FROM offers "
                              "JOIN outbox ON outbox.id = offers.id "
                              "LEFT JOIN intents ON intents.intent = offers.intent "
                              "WHERE offers.intent = ? AND offers.gave_up_at IS NOT NULL "
                              "AND offers.receipted_at IS NULL AND outbox.sent_at IS NOT NULL "
                              "ORDER BY offers.first_seq, offers.id", (intent_id,)).fetchall()
            if not rows:
                return []
            given_up = [GivenUp(_offer(r), int(r["rearms"] or 0), float(r["last_sent"] or 0.0),
                                float(r["intent_exp"] or 0), r["receipted_at"] is not None,
                                r["status"] == "withdrawn") for r in rows]
            sending = plan(given_up)
            for g, seq in zip(sending, _next_seqs(db, len(sending))):
                db.execute("UPDATE offers SET rearms = rearms + 1, last_sent = ?, last_seq = ? WHERE id = ?",
                           (now, seq, g.offer.id))
        return [g.offer.outgoing() for g in sending]

    def stamp_sends(self, msg_ids: list[str], now: float) -> None:
        """Messages published again from the outbox, in this order: the offers among them get a
        new latest copy in the send order (a receipt must not count them as passed by the older one)."""
        if not msg_ids:
            return
        with self._tx() as db:
            for msg_id, seq in zip(msg_ids, _next_seqs(db, len(msg_ids))):
                db.execute("UPDATE offers SET last_seq = ?, last_sent = ? WHERE id = ?", (seq, now, msg_id))

    def awaiting_receipts(self, now: int) -> int:
        """Unexpired offers the box has not receipted yet (and the kit has not given up on)."""
        r = self._one("SELECT COUNT(*) FROM offers WHERE receipted_at IS NULL AND resend_at IS NOT NULL "
                      "AND valid_until > ?", now)
        return int(r[0]) if r else 0

    def given_up(self) -> int:
        """Offers the kit stopped re-sending after the limit, never receipted."""
        r = self._one("SELECT COUNT(*) FROM offers WHERE receipted_at IS NULL AND gave_up_at IS NOT NULL")
        return int(r[0]) if r else 0

    # -------------------------------------------------------------------------- agreements
    def agreement(self, agreement_id: str) -> AgreementRecord | None:
        r = self._one("SELECT * FROM agreements WHERE id = ?", agreement_id)
        if r is None:
            return None
        return AgreementRecord(id=r["id"], intent=r["intent"], offer=r["offer"], signer=r["signer"],
                               fields=tuple(json.loads(r["fields"])), purpose=r["purpose"],
                               duration_days=r["duration_days"], terms_id=r["terms_id"],
                               terms_sha256=r["terms_sha256"], received_at=r["received_at"],
                               countersignature=Outgoing(r["cs_id"], r["cs_topic"], r["cs_token"], r["cs_exp"]),
                               revoked_at=r["revoked_at"])

    def store_agreement(self, a: AgreementRecord, now: int) -> Outgoing:
        """Store a countersigned agreement; for one stored before, the countersignature sent then.
        An offer takes one agreement: another agreement on it is refused (ProtocolError)."""
        cs = a.countersignature
        with self._tx() as db:
            r = db.execute("SELECT cs_id, cs_topic, cs_token, cs_exp FROM agreements WHERE id = ?",
                           (a.id,)).fetchone()
            if r is not None:
                return Outgoing(r["cs_id"], r["cs_topic"], r["cs_token"], r["cs_exp"])
            if db.execute("SELECT 1 FROM agreements WHERE offer = ?", (a.offer,)).fetchone():
                raise ProtocolError("bad_field", f"offer {a.offer} already has an agreement")
            db.execute(
                "INSERT INTO agreements (id, intent, offer, signer, fields, purpose, duration_days, "
                "terms_id, terms_sha256, received_at, cs_id, cs_topic, cs_token, cs_exp, client_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (a.id, a.intent, a.offer, a.signer, json.dumps(list(a.fields)), a.purpose, a.duration_days,
                 a.terms_id, a.terms_sha256, a.received_at, cs.msg_id, cs.topic, cs.token, cs.exp,
                 self.client_id))
            self._enqueue(db, cs, now)
            return cs

    # -------------------------------------------------------------------------- disclosures
    def store_disclosure(self, d: DisclosureRecord) -> bool:
        """Store (or replace) the disclosed fields, unless the agreement was revoked meanwhile or
        its keeping period is over."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR REPLACE INTO disclosures (agreement, intent, message, fields, received_at) "
                "SELECT ?,?,?,?,? WHERE EXISTS (SELECT 1 FROM agreements WHERE id = ? AND revoked_at IS NULL "
                "AND received_at + duration_days * ? >= ?)",
                (d.agreement, d.intent, d.message, json.dumps(d.fields), d.received_at, d.agreement, DAY,
                 d.received_at))
            return cur.rowcount > 0

    def purge_expired(self, now: int) -> int:
        """Delete disclosed data whose agreement's period (duration_days) is over; the agreement
        is marked deleted. Returns how many disclosures went."""
        with self._tx() as db:
            expired = "SELECT id FROM agreements WHERE received_at + duration_days * ? < ?"
            cur = db.execute(f"DELETE FROM disclosures WHERE agreement IN ({expired})", (DAY, now))
            if not cur.rowcount:
                return 0
            db.execute(f"UPDATE agreements SET deleted = 1 WHERE id IN ({expired})", (DAY, now))
            db.execute("INSERT OR IGNORE INTO purge (id, created_at) VALUES (?, ?)", (f"expired-{now}", now))
            n = cur.rowcount
        self.purge_wal()
        return n

    # -------------------------------------------------------------------------- revocations
    def revocation_id(self, agreement_id: str) -> str | None:
        """The id of the revocation already recorded for this agreement, if any."""
        r = self._one("SELECT id FROM revocations WHERE agreement = ?", agreement_id)
        return r["id"] if r else None

    def revoke(self, r: RevocationRecord, now: int) -> Outgoing | None:
        """End the agreement, delete the disclosed data if asked, queue the ack: one transaction.
        An agreement is revoked once: the same revocation again gets the ack made then; another
        revocation of it is refused (ProtocolError). Returns the ack to publish, or None while it
        is held until the deleted data has left the WAL (the worker retries the purge)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM revocations WHERE agreement = ?", (r.agreement,)).fetchone()
            if row is not None:
                if row["id"] != r.id:
                    raise ProtocolError("bad_field", f"agreement {r.agreement[:12]}... was already revoked "
                                                     f"by revocation {row['id']}")
                held = db.execute("SELECT 1 FROM purge WHERE id = ?", (row["ack_id"],)).fetchone()
                return None if held else Outgoing(row["ack_id"], row["ack_topic"], row["ack_token"], row["ack_exp"])
            db.execute(
                "INSERT INTO revocations (agreement, id, intent, delete_data, reason, received_at, "
                "ack_id, ack_topic, ack_token, ack_exp) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (r.agreement, r.id, r.intent, int(r.delete), r.reason, r.received_at, r.ack.msg_id,
                 r.ack.topic, r.ack.token, r.ack.exp))
            if r.delete:
                db.execute("DELETE FROM disclosures WHERE agreement = ?", (r.agreement,))
                db.execute("INSERT OR IGNORE INTO purge (id, created_at) VALUES (?, ?)", (r.ack.msg_id, now))
            db.execute("UPDATE agreements SET revoked_at = COALESCE(revoked_at, ?), "
                       "revocation = COALESCE(revocation, ?), deleted = MAX(deleted, ?) WHERE id = ?",
                       (r.received_at, r.id, int(r.delete), r.agreement))
            self._enqueue(db, r.ack, now)
        if not r.delete:
            return r.ack
        released = self.purge_wal()
        return r.ack if released is not None and r.ack.msg_id in {o.msg_id for o in released} else None

    # -------------------------------------------------------------------------- purging
    def purge_pending(self) -> bool:
        """Is deleted data waiting for a WAL truncation (here or in another worker)?"""
        return self._one("SELECT 1 FROM purge LIMIT 1") is not None

    def purge_wal(self) -> list[Outgoing] | None:
        """Deleted rows are zeroed in the database (secure_delete); the WAL still holds the
        old page images until it is checkpointed and truncated. Try that now, waiting at most
        STEP_BUSY_MS for readers. On success, return the held acks it releases (not yet sent);
        None if a reader blocked it (the `purge` rows stay: try again later)."""
        waiting = [r["id"] for r in self._all("SELECT id FROM purge")]  # read first: committed before
        with self._lock:                                                # the checkpoint, so covered
            try:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                busy = 1
        if busy:
            log.debug("WAL checkpoint blocked by a reader; deleted data stays in the WAL until a retry")
            return None
        if not waiting:
            return []
        marks = ",".join("?" * len(waiting))
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM outbox WHERE sent_at IS NULL AND id IN ({marks})", waiting).fetchall()
            db.execute(f"DELETE FROM purge WHERE id IN ({marks})", waiting)
        return [_outgoing(r) for r in rows]

    # -------------------------------------------------------------------------- pruning
    def prune(self, now: int) -> dict[str, int]:
        """Forget what can no longer matter: withdrawals, outbox rows, offers nobody agreed to
        and intents without offers, all some time after they expired. Agreements stay."""
        cutoff = now - PRUNE_MARGIN_S
        with self._tx() as db:
            counts = {
                "withdrawals": db.execute("DELETE FROM withdrawals WHERE exp < ?", (cutoff,)).rowcount,
                "outbox": db.execute("DELETE FROM outbox WHERE exp < ? AND id NOT IN (SELECT offer FROM agreements) "
                                     "AND id NOT IN (SELECT id FROM purge)", (cutoff,)).rowcount,
                "offers": db.execute("DELETE FROM offers WHERE valid_until < ? AND NOT EXISTS "
                                     "(SELECT 1 FROM agreements WHERE agreements.offer = offers.id)",
                                     (cutoff,)).rowcount,
                "intents": db.execute("DELETE FROM intents WHERE COALESCE(exp, received_at + ?) < ? AND NOT EXISTS "
                                      "(SELECT 1 FROM offers WHERE offers.intent = intents.intent)",
                                      (MAX_LIFETIME, cutoff)).rowcount,
            }
        if any(counts.values()):
            log.info("ledger pruned: %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        return counts

    # -------------------------------------------------------------------------- listings (CLI)
    def list_intents(self) -> list[dict[str, Any]]:
        return [{"intent": r["intent"], "category": r["category"], "status": r["status"],
                 "offers": r["offers"], "received_at": r["received_at"], "client_id": r["client_id"],
                 "attributes": json.loads(r["attributes"])}
                for r in self._all("SELECT * FROM intents ORDER BY received_at, intent")]

    def list_offers(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        return [{"id": r["id"], "intent": r["intent"], "sku": r["sku"], "name": r["name"], "price": r["price"],
                 "currency": r["currency"], "valid_until": r["valid_until"], "terms": r["terms_id"],
                 "decision": r["decision"], "created_at": r["created_at"], "client_id": r["client_id"],
                 "sent": r["sent_at"] is not None, "receipted": r["receipted_at"] is not None,
                 "resends": r["resends"], "gave_up": r["receipted_at"] is None and r["gave_up_at"] is not None,
                 "gave_up_at": r["gave_up_at"], "rearms": r["rearms"], "delivery": _delivery(r, now)}
                for r in self._all("SELECT offers.*, outbox.sent_at, intents.status, intents.exp AS intent_exp "
                                   "FROM offers LEFT JOIN outbox "
                                   "ON outbox.id = offers.id LEFT JOIN intents ON intents.intent = offers.intent "
                                   "ORDER BY offers.created_at, offers.first_seq, offers.id")]

    def list_agreements(self) -> list[dict[str, Any]]:
        return [{"id": r["id"], "intent": r["intent"], "offer": r["offer"], "sku": r["sku"],
                 "signer": r["signer"], "fields": json.loads(r["fields"]), "purpose": r["purpose"],
                 "duration_days": r["duration_days"], "terms": r["terms_id"], "received_at": r["received_at"],
                 "countersignature": r["cs_id"], "revoked_at": r["revoked_at"], "deleted": bool(r["deleted"]),
                 "client_id": r["client_id"]}
                for r in self._all("SELECT agreements.*, offers.sku FROM agreements JOIN offers "
                                   "ON offers.id = agreements.offer ORDER BY agreements.received_at, agreements.id")]

    def list_disclosures(self) -> list[dict[str, Any]]:
        return [{"agreement": r["agreement"], "intent": r["intent"], "message": r["message"],
                 "purpose": r["purpose"], "fields": json.loads(r["fields"]), "received_at": r["received_at"]}
                for r in self._all("SELECT disclosures.*, agreements.purpose FROM disclosures JOIN agreements "
                                   "ON agreements.id = disclosures.agreement ORDER BY disclosures.received_at")]


def _receipted(db: sqlite3.Connection, intent_ids: list[str] | set[str]) -> Receipts:
    out: dict[str, list[Receipted]] = {}
    ids = list(intent_ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for r in db.execute(f"SELECT intent, floor_seq, receipted_at FROM offers WHERE receipted_at IS NOT NULL "
                            f"AND intent IN ({marks})", chunk):
            out.setdefault(r[0], []).append(Receipted(int(r[1] or 0), float(r[2])))
    # two statements: each MAX is then one look in its index
    floor = db.execute("SELECT MAX(floor_seq) FROM offers WHERE receipted_at IS NOT NULL").fetchone()[0]
    at = db.execute("SELECT MAX(receipted_at) FROM offers WHERE receipted_at IS NOT NULL").fetchone()[0]
    return Receipts({k: tuple(v) for k, v in out.items()}, Receipted(int(floor or 0), float(at or 0.0)))


def _delivery(r: sqlite3.Row, now: float) -> str:
    """Where an offer stands with the box, in one word (`vrm-vendor offers`)."""
    if r["receipted_at"] is not None:
        return "receipted"
    if r["gave_up_at"] is not None:
        return "gave_up"
    if r["valid_until"] <= now or 0 < (r["intent_exp"] or 0) <= now:
        return "expired"
    if r["status"] == "withdrawn":
        return "withdrawn"
    if r["sent_at"] is None:
        return "unsent"
    return "waiting" if r["resend_at"] is not None else "untracked"   # untracked: sent before receipts


def _offer(r: sqlite3.Row) -> OfferRecord:
    return OfferRecord(id=r["id"], intent=r["intent"], intent_signer=r["intent_signer"], sku=r["sku"],
                       name=r["name"], price=r["price"], currency=r["currency"], valid_until=r["valid_until"],
                       terms_id=r["terms_id"], terms_sha256=r["terms_sha256"], decision=r["decision"],
                       token=r["token"])


def _outgoing(r: sqlite3.Row) -> Outgoing:
    return Outgoing(r["id"], r["topic"], r["token"], r["exp"], bool(r["retain"]))
