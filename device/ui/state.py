"""What the UI knows and the events that change it: plain frozen dataclasses, no I/O.

Why a separate module: navigation (state + event -> state + requests) and the screens
(state -> drawing) both read these, and the shell (app.py) only builds events and carries out
requests. Everything the box says is kept as it came (dicts from the button socket); the
screens clean vendor text when they draw it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger(__name__)

# The reads the UI keeps fresh (button.sock operations, see docs/architecture.md).
READS = ("status", "offers", "intents", "agreements", "presets", "pending", "pairing_status")
# Which reads an event from the box's `subscribe` stream makes stale.
EVENT_READS: Mapping[str, tuple[str, ...]] = {
    "offer": ("offers", "status"),
    "rejected": ("status",),
    "agreement_active": ("agreements",),
    "revocation_acknowledged": ("agreements",),
    "changed": ("offers", "intents", "agreements", "pending", "status", "pairing_status"),
    "pending": ("pending",),
}
MENU: tuple[tuple[str, str], ...] = (
    ("matches", "Matches"), ("pending", "Waiting for you"), ("intents", "Intents"),
    ("agreements", "Agreements"), ("pair", "Pair phone"))
OFFER_ACTIONS: tuple[tuple[str, str], ...] = (
    ("accept", "Accept..."), ("snooze", "Snooze 1 day"), ("decline", "Decline"))
SNOOZE_S = 86400
# Operations a long press may trigger, and only from these screens (navigation.py enforces it).
CONSENT_OPS = frozenset({"offer_accept", "confirm", "approve"})
CONSENT_SCREENS = frozenset({"accept", "pending"})


# ---------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Key:
    """A button or key: role (up/down/left/right/select/back/home), kind (down/short/long)."""
    role: str
    kind: str = "short"


@dataclass(frozen=True)
class Loaded:
    """A read came back."""
    op: str
    result: Any


@dataclass(frozen=True)
class Done:
    """An action the UI asked for succeeded."""
    request: "Request"
    result: Any


@dataclass(frozen=True)
class Failed:
    """A read or action was refused or could not be sent; `error` is the box's own words."""
    request: "Request"
    error: str


@dataclass(frozen=True)
class BoxEvent:
    """One event from the `subscribe` stream."""
    event: Mapping[str, Any]


@dataclass(frozen=True)
class Connection:
    """The shell reached (up=True) or lost the daemon; `detail` in plain words."""
    up: bool
    detail: str = ""


@dataclass(frozen=True)
class Refresh:
    """Time to re-read (the shell sends this now and then: the stream can drop events)."""
    ops: tuple[str, ...] = READS


Event = Key | Loaded | Done | Failed | BoxEvent | Connection | Refresh


@dataclass(frozen=True)
class Request:
    """An operation for the shell to send on button.sock. `tag` says why (navigation uses it
    when the answer comes back)."""
    op: str
    args: Mapping[str, Any] = field(default_factory=dict)
    tag: str = ""


# ---------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Data:
    """The box's answers, as last read."""
    status: Mapping[str, Any] = field(default_factory=dict)
    offers: tuple[Mapping[str, Any], ...] = ()
    intents: tuple[Mapping[str, Any], ...] = ()
    agreements: tuple[Mapping[str, Any], ...] = ()
    presets: tuple[Mapping[str, Any], ...] = ()
    pending: tuple[Mapping[str, Any], ...] = ()   # agreements and requests, each with "kind"
    pair: Mapping[str, Any] | None = None
    pairing: Mapping[str, Any] = field(default_factory=dict)   # pairing_status: wrong codes, lockouts
    preview: Mapping[str, Any] | None = None       # accept_preview for State.offer
    loaded: frozenset[str] = frozenset()
    unavailable: frozenset[str] = frozenset()     # ops this button.sock does not offer


@dataclass(frozen=True)
class Ask:
    """A yes/no question before a harmless but final action (withdraw, refuse)."""
    prompt: str
    request: Request
    back: str                      # the screen to return to


@dataclass(frozen=True)
class State:
    screen: str = "status"
    cursor: int = 0                # selected row on list screens
    scroll: int = 0                # first text line on scrolling screens
    offer: str | None = None       # the offer on detail / actions / accept
    ask: Ask | None = None
    armed: tuple[str, str | None] | None = None   # (screen, target) where SELECT went down
    busy: str | None = None        # an action in flight (its op)
    notice: str | None = None      # a one-line message until the next key
    connected: bool = False        # the daemon answers
    connection_detail: str = "connecting to the box daemon"
    seen: frozenset[str] = frozenset()            # offers the person has looked at
    data: Data = field(default_factory=Data)
    sent: tuple[str, ...] = ()     # consent ops sent (op:target), for the record and tests
    # From the config, read at the edge (app.py): the phone app's pairing address (None on a
    # development box) and its certificate's SHA-256, "AB:CD:..." (None without HTTPS).
    pair_url: str | None = None
    cert_fingerprint: str | None = None
    size: tuple[int, int] = (128, 64)   # the display's: how far a consent text must be scrolled

    def offer_row(self, offer_id: str | None) -> Mapping[str, Any] | None:
        return next((o for o in self.data.offers if o.get("offer") == offer_id), None)

    def new_matches(self) -> int:
        return sum(1 for o in self.data.offers if o.get("offer") not in self.seen)

    def pending_item(self) -> Mapping[str, Any] | None:
        items = self.data.pending
        return items[min(self.cursor, len(items) - 1)] if items else None

    def intent_rows(self) -> list[tuple[str, Mapping[str, Any]]]:
        """("preset", p) for each saved intent to cast, then ("intent", i) for each live one."""
        live = [i for i in self.data.intents if i.get("status") == "active"]
        return [("preset", p) for p in self.data.presets] + [("intent", i) for i in live]


def pending_items(result: Any) -> tuple[Mapping[str, Any], ...]:
    """The `pending` read as one list: agreements to confirm, then held requests."""
    if not isinstance(result, Mapping):
        return ()
    out: list[Mapping[str, Any]] = []
    for kind, key in (("agreement", "agreements"), ("request", "requests")):
        for item in result.get(key) or ():
            if isinstance(item, Mapping):
                out.append({**item, "kind": kind})
    return tuple(out)


def target_of(item: Mapping[str, Any] | None) -> str | None:
    if item is None:
        return None
    return str(item.get("agreement") if item.get("kind") == "agreement" else item.get("request"))
