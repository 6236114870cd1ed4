"""What keeps the companion app from being the weak door into the box.

* Host check (DNS-rebinding defence): only the box's own names and addresses are served.
* Security headers on every response: strict CSP without inline script, no framing, no
  sniffing, no referrer, and no caching of anything but static files.
* Sessions: a paired phone's cookie carries its session secret (signed with SECRET_KEY); every
  request's secret is checked with the daemon (`phone_session`), cached for at most
  SESSION_CACHE_S, so unpairing (from the phone or the box) ends the session at once.
* CSRF: Flask-WTF's token on every state-changing request; the API sends it in `X-CSRFToken`;
  a foreign Origin (scheme, host and port compared: `same_origin`) is refused before it.
* SECRET_KEY from the box's secrets file, generated (0600) on first run, never from code.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from flask import Flask, Response, g, request, session

from .box import Box, BoxDown, BoxRefused

log = logging.getLogger(__name__)

# Provisioning writes <config dir>/secrets/companion_secret (provisioning/layout.py); without it
# (a development box) the app makes one under <data_dir>/secrets/ on first run.
SECRET_FILE = Path("secrets") / "companion_secret"
SESSION_CACHE_S = 1.0
SESSION_KEY = "phone_secret"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def secret_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / SECRET_FILE


def read_secret(path: Path) -> bytes:
    """An existing secret file; refused when too short, warned about when others may read it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); it should be 0600", path, mode)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds fewer than 32 bytes: delete it to make a new one")
    return key


def load_secret_key(data_dir: Path | str) -> bytes:
    """The app's signing key: read it, or make it (0600, in a 0700 folder) the first time."""
    path = secret_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.info("made a new companion secret in %s", path)
    return key


def box_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names the box answers to (without port), lower-case."""
    host = socket.gethostname().lower()
    names = {"localhost", "127.0.0.1", "::1", host, f"{host}.local", "vrmbox.local"}
    names.update(n.lower() for n in extra if n)
    return frozenset(names)


def host_of(header: str) -> str:
    """'[::1]:8080' -> '::1', 'box.local:80' -> 'box.local' (no validation beyond that)."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.index("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, the port filled in from the scheme; None when
    it is not an http(s) origin with a host and a valid port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether a request's Origin header is this app's own origin: scheme, host AND port the
    same as the request's (a page on another port of the box is another site)."""
    mine = origin_of(f"{scheme}://{host}")
    return mine is not None and origin_of(origin) == mine


class Sessions:
    """Which phone a session secret belongs to, asked of the daemon (cached very briefly)."""

    def __init__(self, box: Box, cache_s: float = SESSION_CACHE_S) -> None:
        self.box = box
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def phone(self, secret: str) -> dict[str, Any] | None:
        """The phone, or None when the secret is not (or no longer) paired. BoxDown passes up."""
        key, now = self._key(secret), time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        try:
            phone: dict[str, Any] | None = self.box.call("phone_session", {"secret": secret})
        except BoxRefused:
            phone = None
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = (now + self.cache_s, phone)
        return phone

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def install(app: Flask) -> None:
    """Host check first, headers last, on every request."""
    allowed: frozenset[str] = app.config["ALLOWED_HOSTS"]

    @app.before_request
    def check_host() -> Any:
        if host_of(request.host) not in allowed:
            log.warning("refused request for host %r from %s", request.host, request.remote_addr)
            return Response("unknown host\n", status=400, mimetype="text/plain")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        for k, v in HEADERS.items():
            resp.headers.setdefault(k, v)
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Pragma"] = "no-cache"
        if app.config.get("HTTPS"):
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        return resp


def current_phone(app: Flask) -> dict[str, Any] | None:
    """Set g.phone and g.box_down for this request; the phone or None."""
    if "phone" in g:
        return g.phone
    g.phone, g.box_down = None, False
    secret = session.get(SESSION_KEY)
    if isinstance(secret, str):
        try:
            g.phone = app.extensions["vrmbox_sessions"].phone(secret)
        except BoxDown:
            g.box_down = True
    return g.phone
