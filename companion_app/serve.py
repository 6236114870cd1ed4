"""The phone app's HTTP(S) servers: cheroot, which terminates TLS itself (waitress does not).

With a certificate the app is served over HTTPS only; a second, plain-HTTP listener answers every
request with a redirect to the HTTPS address, except `/ca.pem`, the box's own CA certificate,
which a phone fetches once to trust the box (docs/companion.md). Nothing of the app itself is
ever served over plain HTTP on the LAN.
"""
from __future__ import annotations

import logging
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote

from cheroot import wsgi

log = logging.getLogger(__name__)

THREADS = 8
TIMEOUT_S = 60
CA_PATH = "/ca.pem"


@dataclass(frozen=True)
class Tls:
    cert_file: Path
    key_file: Path


# A phone that navigates away or sleeps drops its TLS connection mid-request: normal, not an error.
_CLIENT_GONE = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)


def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's error log into ours, a client that hung up at debug level without a traceback."""
    exc = sys.exc_info()[1]
    if isinstance(exc, _CLIENT_GONE) or (isinstance(exc, OSError) and exc.args[:1] == (8,)):
        log.debug("client went away: %s (%r)", msg, exc)
        return
    log.log(level, "cheroot: %s", msg, exc_info=traceback)


def make_server(app: Callable[..., Any], bind: str, port: int, tls: Tls | None = None,
                threads: int = THREADS) -> wsgi.Server:
    """A bound (not yet serving) server: OSError here when the port is taken or the key unreadable."""
    server = wsgi.Server((bind, port), app, numthreads=threads, server_name="vrmbox", timeout=TIMEOUT_S)
    server.error_log = _error_log        # type: ignore[method-assign]
    if tls is not None:
        from cheroot.ssl.builtin import BuiltinSSLAdapter
        server.ssl_adapter = BuiltinSSLAdapter(str(tls.cert_file), str(tls.key_file))
    server.prepare()
    return server


def bound_port(server: wsgi.Server) -> int:
    return int(server.bind_addr[1])


def redirect_app(https_port: int, ca_pem: bytes | None) -> Callable[..., Iterable[bytes]]:
    """Plain HTTP: the CA certificate at /ca.pem, a 308 to the same path over HTTPS for the rest."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == CA_PATH and ca_pem is not None and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "application/x-pem-file"),
                                      ("Content-Disposition", 'attachment; filename="vrmbox-ca.pem"'),
                                      ("Content-Length", str(len(ca_pem))), ("Cache-Control", "no-store")])
            return [ca_pem]
        host = (environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "").rsplit(":", 1)[0]
        if not host or any(c in host for c in "/\\@?#\r\n\t "):
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad Host\n"]
        target = f"https://{host}:{https_port}{quote(path, safe='/')}"
        body = b"the box's phone app is served over HTTPS only\n"
        start_response("308 Permanent Redirect", [("Location", target), ("Content-Type", "text/plain"),
                                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def serve_in_thread(server: wsgi.Server) -> threading.Thread:
    t = threading.Thread(target=server.serve, name=f"vrmbox-http-{bound_port(server)}", daemon=True)
    t.start()
    return t
