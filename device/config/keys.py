"""Every config key, declared once: its check, default, one-line help, which processes read it,
and the notes docs/config.md shows. Validation (load.py), the commented config.toml provisioning
writes and config/vrmbox.example.toml (render.py) and the key tables of docs/config.md are all
made from this list, so a key cannot be documented, checked and defaulted three different ways.

Why "readers": an installed box runs as three users (docs/provisioning.md), and each process
checks only the keys it uses. The UI and the phone app never open the daemon's secrets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import checks as c
from .checks import Check

DAEMON, UI, COMPANION, CLI = "daemon", "ui", "companion", "cli"
READERS = (DAEMON, UI, COMPANION, CLI)
PROCESS_USER = {DAEMON: "vrmbox", UI: "vrmbox-ui", COMPANION: "vrmbox-companion", CLI: "the box's owner"}
ALL = frozenset(READERS)

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
DEFAULT_TERMS_ID = "vrm-basic-1"
DEFAULT_TERMS_TEXT = "No tracking. No resale. Delete my data 30 days after the agreement ends."
DEFAULT_COMPANION_BIND = "0.0.0.0"
DEFAULT_COMPANION_PORT = 8080

NO_DEFAULT = None


@dataclass(frozen=True)
class Key:
    name: str                       # dotted: "broker.url"; top-level keys have no dot
    check: Check
    default: Any
    help: str                       # one line: the comment in config.toml, the table's first words
    readers: frozenset[str]
    kind: str                       # the type as docs/config.md names it
    example: Any = None             # shown commented out when there is no default
    notes: str = ""                 # more for docs/config.md
    default_doc: str | None = None  # the default as the docs show it, when computed at start
    file: bool = False              # a file its readers need: checked to exist when they load
    secret_file: bool = False       # a secret: read only by its readers, when they use it

    @property
    def section(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def short(self) -> str:
        return self.name.rpartition(".")[2]


def _k(name: str, check: Check, default: Any, help: str, readers: frozenset[str], kind: str,
       **more: Any) -> Key:
    return Key(name, check, default, help, readers, kind, **more)


_D = frozenset({DAEMON, CLI})
_DU = frozenset({DAEMON, UI, CLI})
_DC = frozenset({DAEMON, COMPANION, CLI})
_C = frozenset({COMPANION, CLI})
_U = frozenset({UI, CLI})
_CU = frozenset({COMPANION, UI, CLI})


def _broker_keys(section: str) -> tuple[Key, ...]:
    """[broker] and [home_broker] have the same keys; only the daemon connects to either."""
    home = section == "home_broker"
    s = section
    return (
        _k(f"{s}.url", c.url, DEFAULT_BROKER_URL,
           "mqtts://host[:port] (TLS, 8883) or mqtt://host[:port] (plain, loopback only).", _D, "string",
           notes="No credentials, path or query. Gives `host`, `port` (default 1883 for mqtt, 8883 "
                 "for mqtts) and `tls`."),
        _k(f"{s}.username", c.string(256, optional=True), NO_DEFAULT,
           "The box's broker account (no default: there are no default passwords).", _D, "string",
           example="box-livingroom", notes="Required when a password is set."),
        _k(f"{s}.password_file", c.path(), NO_DEFAULT,
           "File holding the broker password (first line), mode 0600, readable by the daemon only.",
           frozenset({DAEMON}), "path", example="/etc/vrmbox/secrets/broker.password", secret_file=True,
           notes="Read by the daemon when it connects (not at load, and never by the UI or the phone "
                 "app); a warning is logged when its mode is looser than 0600. An unreadable file "
                 "is an error naming the file and the account that needs it."),
        _k(f"{s}.password", c.string(1024, optional=True), NO_DEFAULT,
           "Inline password: possible, discouraged; use password_file.", frozenset({DAEMON}), "string",
           example="...", notes="Not together with `password_file`; never shown (`'***'`)."),
        _k(f"{s}.ca_file", c.path(), NO_DEFAULT,
           "CA certificate(s) the broker's certificate must chain to (mqtts only).", frozenset({DAEMON}), "path",
           example="/etc/vrmbox/tls/ca.pem", file=True,
           notes="PEM; without it the system CAs are used. Must exist."),
        _k(f"{s}.cert_file", c.path(), NO_DEFAULT,
           "Client certificate for mutual TLS (optional, mqtts only).", frozenset({DAEMON}), "path",
           example="/etc/vrmbox/tls/box.pem", file=True),
        _k(f"{s}.key_file", c.path(), NO_DEFAULT,
           "Key of cert_file, when cert_file does not hold it.", frozenset({DAEMON}), "path",
           example="/etc/vrmbox/tls/box.key", file=True, notes="Needs `cert_file`."),
        _k(f"{s}.client_id", c.client_id, NO_DEFAULT,
           "MQTT client id; default: a random one, new at every start.", _D, "string",
           example="vrmbox-livingroom", default_doc="random",
           notes="1..64 of `[A-Za-z0-9._-]`. Default: `\"vrmbox-\"` + 16 random hex digits, new at "
                 "every start and kept nowhere; nothing on the wire is derived from it. The market "
                 "link keeps no session (clean start, session expiry 0), so an id read from the "
                 "broker's log names nothing once the box is offline; if another client takes the "
                 "live session with it, the box comes back under a new id and counts it "
                 "(`vrmbox status` `session_taken_over`)."),
        _k(f"{s}.keepalive", c.int_range(5, 3600), 30,
           "Seconds between MQTT keep-alive pings (5..3600).", _D, "integer"),
        _k(f"{s}.reconnect_min", c.int_range(1, 3600), 1,
           "Reconnect back-off start, seconds (1..3600).", _D, "integer"),
        _k(f"{s}.reconnect_max", c.int_range(1, 86400), 60,
           "Reconnect back-off ceiling, seconds (1..86400, at least reconnect_min).", _D, "integer"),
    ) if not home else tuple(
        Key(k.name.replace("broker.", "home_broker.", 1), k.check, k.default, k.help, k.readers,
            k.kind, k.example, "", k.default_doc, k.file, k.secret_file)
        for k in _broker_keys("broker")) + (
        # only the home link keeps a session: the market link keeps none (its client_id)
        _k("home_broker.session_expiry", c.int_range(0, 2**32 - 1), 7 * 86400,
           "Seconds the home broker keeps the box's session after it goes.", _D, "integer",
           notes="MQTT 5 session expiry (0..4294967295); default 7 days. The home link starts clean "
                 "under a new client id at every start (it only publishes the box's availability), "
                 "so this bounds how long a session a crash left behind stays on the home broker; "
                 "provisioning's broker also drops sessions of clients that never return."),)


KEYS: tuple[Key, ...] = (
    _k("data_dir", c.path(optional=False), NO_DEFAULT,
       "Where the box keeps its store and keys ($VRMBOX_DATA_DIR wins over this).", _DC, "path",
       example="/var/lib/vrmbox", default_doc="`$VRMBOX_DATA_DIR`, else `~/.local/share/vrmbox`",
       notes="The box's store and keys (docs/store.md)."),
    _k("log_level", c.level, "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL.", ALL, "string",
       notes="Any case; stored upper-case."),
    _k("presets", c.presets, (), "Intents a button casts with one press ([[presets]], see below).",
       _D, "array of tables `[[presets]]`", default_doc="none", notes="At most 32."),
    *_broker_keys("broker"),
    *_broker_keys("home_broker"),
    _k("intake.max_queue", c.int_range(1, 1_000_000), 1000,
       "Received messages waiting for verification; full = stop reading.", _D, "integer",
       notes="1..1000000. When full the daemon stops reading from the broker (which holds back "
             "what it has not sent, up to Receive Maximum) until there is room: backpressure, not loss."),
    _k("intake.per_vendor_per_minute", c.int_range(1, 100_000), 60,
       "Per vendor and intent token bucket: refill per minute.", _D, "integer",
       notes="Per intent so that a vendor cannot link two intents by spending its budget on one; "
             "re-sends of stored offers have a bucket of their own of the same size."),
    _k("intake.per_vendor_burst", c.int_range(1, 100_000), 20,
       "Per vendor and intent token bucket: its size (at most max_queue).", _D, "integer"),
    _k("intake.max_message_bytes", c.int_range(1024, 65536), 65536,
       "Larger payloads are dropped unread (1024..65536).", _D, "integer"),
    _k("intake.max_offers_per_vendor_intent", c.int_range(1, 10_000), 20,
       "Offers kept from one vendor for one intent; more are refused as too_many_offers.", _D,
       "integer", notes="Bounds what a vendor inside its rate limit can make the box store and re-rank."),
    _k("intake.max_vendors", c.int_range(1, 100_000), 2000,
       "Vendors pinned at most; a profile for a new slug past it is refused (too_many_vendors).",
       _D, "integer", notes="Known vendors keep working. Bounds what a flood of fresh keys can make "
                            "the box store (docs/protocol.md §11)."),
    _k("intake.verify_workers", c.workers, "auto",
       'Signature-check processes: "auto" = one per CPU; 0 or 1 = in the daemon itself.', _D,
       '`"auto"` or integer', notes="0..64. Each process costs about 40 MB of memory: on a 512 MB "
                                    "board with four cores, 2 may be the better choice."),
    _k("intake.receive_maximum", c.int_range(10, 65535), 2000,
       "MQTT ReceiveMaximum: unacknowledged messages the broker may send at once (10..65535).", _D,
       "integer", notes="Also the most messages waiting in the fair lanes before the daemon stops "
                        "reading."),
    _k("intake.max_pending_bytes", c.int_range(65536, 1 << 30), 16 * 1024 * 1024,
       "Payload bytes at most waiting for their signature check.", _D, "integer",
       notes="65536..1073741824; reached first only by large messages."),
    _k("intents.default_ttl_s", c.int_range(60, 366 * 86400), 7 * 86400,
       "Lifetime of a published intent, seconds (60..31622400).", _D, "integer"),
    _k("intents.terms_id", c.slug, DEFAULT_TERMS_ID,
       "The terms the person proffers with every intent: an id (slug) ...", _D, "slug"),
    _k("intents.terms_text", c.string(), DEFAULT_TERMS_TEXT,
       "... and the text, whose SHA-256 every offer must echo.", _D, "string", notes="1..2000 characters."),
    _k("intents.terms_uri", c.string(optional=True), NO_DEFAULT,
       "Public URL of the terms text (optional).", _D, "string",
       example="https://example.org/terms/vrm-basic-1"),
    _k("intents.republish_every_s", c.int_range(1, 604800), 900,
       "Mean seconds between re-publishes of each live intent, on its own random clock.",
       _D, "integer", notes="1..604800. Each intent's moments are its own (exponential gaps), "
                            "whether or not the box is connected, so a reconnect publishes "
                            "nothing that ties a person's intents together; the re-publishes "
                            "bring an intent back to a broker that lost its retained copy."),
    _k("agreements.countersign_timeout_s", c.int_range(10, 86400), 300,
       "Seconds to wait for the vendor's countersignature (nothing is disclosed before it).", _D,
       "integer"),
    _k("agreements.default_duration_days", c.int_range(1, 3650), 30,
       "Agreement duration offered by default, days (1..3650).", _D, "integer"),
    _k("agreements.companion_only_confirmation", c.boolean, False,
       "true: the paired phone may confirm agreements too (the box's button always works).", _D,
       "boolean", notes="The daemon copies this into the store's settings at first start; later "
                        "changes win after that (turning it on from the phone waits for a press)."),
    _k("agreements.default_purpose", c.string(200), "fulfil the offer",
       "Purpose stated when an offer is accepted on the box itself.", _D, "string"),
    _k("agreements.default_fields", c.fields, ("email",),
       "Profile fields an accept on the box's own screen shares.", _D, "list of field names"),
    _k("control.socket", c.path(), NO_DEFAULT,
       "Unix socket of the control API (the CLI, the phone app).", _DC, "path",
       example="/run/vrmbox/control.sock", default_doc="`<data_dir>/control.sock`",
       notes="At most 107 bytes (checked, also for the derived default)."),
    _k("control.button_socket", c.path(), NO_DEFAULT,
       "Unix socket of the box's own face (the UI): only a client here can press.", _DU, "path",
       example="/run/vrmbox/button.sock", default_doc="`button.sock` next to `control.socket`"),
    _k("control.control_users", c.names(), (),
       "Accounts that may open control.sock as the phone app (the box's own user always may).",
       _D, "list of users", example=["vrmbox-companion"]),
    _k("control.control_groups", c.names(), (),
       "Groups whose members may open control.sock as the phone app.", _D, "list of groups"),
    _k("control.button_users", c.names(), (),
       "Accounts that may open button.sock (a press there counts as consent).", _D, "list of users",
       example=["vrmbox-ui"], notes="May not include the box's own user or a `control_users` user."),
    _k("control.button_groups", c.names(), (),
       "Groups whose members may open button.sock.", _D, "list of groups"),
    _k("ui.profile", c.string(400, optional=True), NO_DEFAULT,
       "The board the UI drives: a name from `vrmbox hardware list` or a profile file.", _U, "string",
       example="adafruit-oled-bonnet", default_doc="`adafruit-oled-bonnet`",
       notes="`--profile` wins. `install.sh --board PROFILE` sets it."),
    _k("companion.bind", c.string(64), DEFAULT_COMPANION_BIND,
       "Address the phone app listens on (0.0.0.0: every interface of the box).", _C, "string"),
    _k("companion.port", c.int_range(0, 65535), DEFAULT_COMPANION_PORT,
       "Port the phone app listens on (0: any free one); the box's pairing screen shows it.", _CU,
       "integer"),
    _k("companion.cert_file", c.path(), NO_DEFAULT,
       "The phone app's TLS certificate: set, it is served over HTTPS only.", _CU, "path",
       example="/etc/vrmbox/tls/companion.pem", file=True,
       notes="Unset: plain HTTP (a development box on loopback). `vrmbox provision` sets it."),
    _k("companion.key_file", c.path(), NO_DEFAULT,
       "Private key of companion.cert_file, readable by the phone app's account only.",
       frozenset({COMPANION}), "path", example="/etc/vrmbox/tls/companion.key", secret_file=True),
    _k("companion.ca_file", c.path(), NO_DEFAULT,
       "The box's CA certificate, handed to phones at http://BOX:redirect_port/ca.pem.", _C, "path",
       example="/etc/vrmbox/tls/ca.pem", file=True),
    _k("companion.redirect_port", c.int_range(0, 65535), 0,
       "With HTTPS: a plain-HTTP port that only redirects to HTTPS and serves /ca.pem (0: none).",
       _C, "integer"),
    _k("companion.secret_file", c.path(), NO_DEFAULT,
       "The phone app's own secret (signs its sessions), readable by its account only.",
       frozenset({COMPANION}), "path", example="/etc/vrmbox/secrets/companion_secret",
       secret_file=True, default_doc="`<data_dir>/companion_secret`, made at first start",
       notes="Read by the phone app when it starts; provisioning writes it."),
)

# Sections present only when given: their keys are shown commented out in config.toml.
OPTIONAL_SECTIONS = {"home_broker": "The box's own broker on the LAN (local topics: availability, "
                                    "the remote). Same keys as [broker]; absent: none."}
# Keys an older version read and this one does not: skipped with a warning, so an upgraded box
# still starts with the config it had, and says what to do.
RETIRED = {"intents.republish_window_s": "intents are no longer re-published after a reconnect; "
                                         "intents.republish_every_s sets their own schedule",
           "broker.session_expiry": "the market link keeps no session any more (see broker.client_id)"}
BY_NAME = {k.name: k for k in KEYS}
SECTIONS: dict[str, dict[str, Key]] = {}
for _key in KEYS:
    SECTIONS.setdefault(_key.section, {})[_key.short] = _key


def default(name: str) -> Any:
    """The built-in default of a key (what a dataclass field starts as)."""
    return BY_NAME[name].default
