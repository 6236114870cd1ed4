"""Companion web app for the phone, served on the home LAN to paired phones only.

`create_app(test_config=None)` is the one seam: config keys
  BOX            a companion_app.box.Box (default: the configured control socket)
  DATA_DIR       where the secrets file lives (default: the box's data dir)
  SECRET_KEY     default: <data_dir>/secrets/companion_secret, made on first run
  ALLOWED_HOSTS  extra host names besides the box's own (security.box_names)
  HTTPS          True when served over TLS (Secure + __Host- cookie, HSTS)
  READ_CACHE_S   how long a read may be reused when no event came (0: never; readcache.py)
docs/companion.md describes pairing, pages, API and the security model.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from markupsafe import Markup, escape

from device.textsafe import for_page

from . import security
from .box import Box
from .readcache import TTL_S, ReadCache
from .throttle import Throttle

log = logging.getLogger(__name__)

csrf = CSRFProtect()
MAX_UPLOAD = 256 * 1024          # the daemon takes at most this much per request anyway


def _defaults() -> dict[str, Any]:
    from device.config import COMPANION, load_config
    cfg = load_config(reader=COMPANION)
    return {"BOX": Box(cfg.control.socket), "DATA_DIR": cfg.data_dir}


def _isotime(ts: Any) -> str:
    """Seconds since the epoch -> '2026-12-01 10:15 UTC' (the box keeps UTC)."""
    try:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _shown(value: Any) -> Any:
    """Jinja's finalize hook: every `{{ ... }}` that is text (not already markup) goes through
    device.textsafe.for_page before it is escaped, so no template can forget it: vendor text
    (names, items, currencies, reasons, refusals) shows bidi and invisible format characters as
    `<U+202E>` escapes and cannot reorder what is around it."""
    if isinstance(value, str) and not hasattr(value, "__html__"):
        return for_page(value)
    return value


def _verbatim(value: Any) -> Markup:
    """`|verbatim`: a form control's value sent back exactly as the person typed it (an
    <input value>, a <textarea>, a hidden field carrying a preview to its cast), HTML-escaped
    but not rewritten by for_page, so a second submit sends the same text. Never for text a
    vendor wrote."""
    return escape("" if value is None else value)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    conf = dict(test_config or {})
    if "BOX" not in conf or "DATA_DIR" not in conf and "SECRET_KEY" not in conf:
        conf = {**_defaults(), **conf}
    https = bool(conf.get("HTTPS"))
    app.config.update(
        SESSION_COOKIE_NAME="__Host-vrmbox" if https else "vrmbox",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=https,
        SESSION_COOKIE_PATH="/",
        MAX_CONTENT_LENGTH=MAX_UPLOAD,
        WTF_CSRF_TIME_LIMIT=None,           # the token lives as long as the session
        WTF_CSRF_CHECK_DEFAULT=False,       # checked in the gate, after the Host check and auth
        WTF_CSRF_SSL_STRICT=False,          # it needs a Referer, which we never send; Origin is checked
        JSON_SORT_KEYS=False,
    )
    app.config.update(conf)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = security.load_secret_key(Path(app.config["DATA_DIR"]))
    app.config["ALLOWED_HOSTS"] = security.box_names(app.config.get("ALLOWED_HOSTS") or ())
    # the cookie is an opaque id whose state is on the box (security.BoxSessions), not Flask's
    # signed cookie, which would carry the session's contents to the browser
    app.session_interface = security.BoxSessions()
    app.extensions["vrmbox_sessions"] = security.Sessions(app.config["BOX"])
    # set when the server stops: open event streams end at once instead of holding the stop up
    app.extensions["vrmbox_stopping"] = threading.Event()
    app.extensions["vrmbox_throttle"] = conf.get("THROTTLE") or Throttle()
    app.extensions["vrmbox_reads"] = ReadCache(app.config["BOX"], ttl_s=float(conf.get("READ_CACHE_S", TTL_S)))
    csrf.init_app(app)
    security.install(app)

    from . import (agreements, api, audit, auth, dashboard, intents, mydata, rules, settings,
                   stream, vendors)
    auth.install_gate(app)
    app.jinja_env.finalize = _shown
    app.add_template_filter(_isotime, "isotime")
    app.add_template_filter(_verbatim, "verbatim")
    for bp in (auth.bp, dashboard.bp, intents.bp, rules.bp, vendors.bp, mydata.bp, agreements.bp,
               audit.bp, settings.bp, api.bp, stream.bp):
        app.register_blueprint(bp)
    return app
