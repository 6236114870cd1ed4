"""What the store refuses, and why: its errors and the checks on values and imported rows.

Pure: every function here looks only at its arguments. A refusal raises StoreError before
anything is written, so a bad request or a bad import file changes nothing.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from vrm_protocol import ProtocolError
from vrm_protocol.codec import b64url_decode
from vrm_protocol.messages import check_slug

from ..audit import canonical_json
from .schema import ENUMS, TABLES

log = logging.getLogger(__name__)

MAX_NAME = 64
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class StoreError(ValueError):
    """A request the store refuses (unknown id, bad value); nothing was changed."""


class ProvenanceError(StoreError):
    """An edit that the field's provenance forbids (e.g. editing a read-only field)."""


def is_slug(value: Any) -> bool:
    """A vendor or supplier id as the protocol spells it."""
    if not isinstance(value, str):
        return False
    try:
        check_slug(value, "vendor")
    except ProtocolError:
        return False
    return True


MAX_JSON_DEPTH = 32      # the person's own values: as deep as any message may be


def _depth(value: Any, limit: int) -> bool:
    """Is `value` nested at most `limit` deep? (Iterative: a deep value cannot blow the stack.)"""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return True


def check_json_value(value: Any, what: str) -> None:
    if not _depth(value, MAX_JSON_DEPTH):
        raise StoreError(f"{what} is nested more than {MAX_JSON_DEPTH} deep")
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must be a JSON value: {exc}") from exc


def check_tables(tables: Any) -> None:
    """Check imported table rows against TABLES (exact columns, kinds, enums); StoreError if not."""
    if not isinstance(tables, dict):
        raise StoreError("data must be an object of tables")
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise StoreError(f"unknown table(s) {sorted(unknown)[:5]}")
    for table, rows in tables.items():
        pk, cols = TABLES[table]
        if not isinstance(rows, list):
            raise StoreError(f"{table} must be a list of rows")
        names = {c for c, _ in cols}
        for i, row in enumerate(rows):
            where = f"{table}[{i}]"
            if not isinstance(row, dict) or set(row) != names:
                raise StoreError(f"{where} must have exactly the columns {sorted(names)}")
            for c, kind in cols:
                v, base = row[c], kind.rstrip("?")
                if v is None:
                    if not kind.endswith("?"):
                        raise StoreError(f"{where}.{c} must not be null")
                    continue
                if base == "text" and not isinstance(v, str):
                    raise StoreError(f"{where}.{c} must be a string")
                if base == "int" and (not isinstance(v, int) or isinstance(v, bool) or abs(v) > 2**62):
                    raise StoreError(f"{where}.{c} must be an integer")
                if base in ("json", "sealed"):
                    check_json_value(v, f"{where}.{c}")
                allowed = ENUMS.get((table, c))
                if allowed and v not in allowed:
                    raise StoreError(f"{where}.{c} must be one of {list(allowed)}")
            _check_row_shape(table, row, where)


def _seed_bytes(value: Any) -> bytes:
    try:
        return b64url_decode(value) if isinstance(value, str) else b""
    except ProtocolError:
        return b""


def _check_row_shape(table: str, row: dict[str, Any], where: str) -> None:
    """Shapes that the record builders rely on, so an imported row can always be read back."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise StoreError(f"{where}: {msg}")
    if table == "intents":
        need(len(_seed_bytes(row["seed"])) == 32, "seed must be 32 bytes, base64url")
        need(isinstance(row["body"], dict) and isinstance(row["token"], str), "body/token malformed")
    elif table in ("offers",):
        need(isinstance(row["body"], dict), "body must be an object")
    elif table == "vendors":
        need(isinstance(row["profile"], dict), "profile must be an object")
    elif table == "agreements":
        need(isinstance(row["body"], dict) and isinstance(row["token"], str), "body/token malformed")
    elif table == "stuff":
        need(isinstance(row["data"], dict) and isinstance(row["data"].get("name"), str), "data.name missing")
    elif table == "claims":
        d = row["data"]
        need(isinstance(d, dict) and isinstance(d.get("jwt"), str) and isinstance(d.get("types"), list)
             and isinstance(d.get("subject"), dict), "data must hold jwt, types, subject")
    elif table == "reviews":
        need(isinstance(row["data"], dict), "data must be an object")
    elif table == "disclosures":
        need(isinstance(row["fields"], list), "fields must be a list")
    elif table == "profile":
        need(row["annotation"] is None or isinstance(row["annotation"], str), "annotation must be text")
    elif table == "rules":
        need(row["id"] == 1 and isinstance(row["value"], dict), "rules row must be id 1 with an object")
