"""The phone app as provisioned: HTTPS only with the box's own certificate, cookies a stranger on
the Wi-Fi cannot read or replay over plain HTTP, and a plain-HTTP port that only redirects and
hands out the box's CA certificate. Real processes, real TLS on loopback."""
from __future__ import annotations

import re
import socket

import pytest
import requests

from processes import wait_for
from tls_helpers import https_companion

pytestmark = pytest.mark.slow


@pytest.fixture
def https_app(tmp_path):
    with https_companion(tmp_path) as app:
        yield app


def test_the_app_is_https_with_secure_host_cookies(https_app):
    base = f"https://127.0.0.1:{https_app['port']}"
    r = requests.get(base + "/pair", verify=str(https_app["ca"]), timeout=10)
    assert r.status_code == 200 and "pair" in r.text.lower()
    cookies = r.headers.get("Set-Cookie", "")
    # the pairing form's own cookie; the session cookie is written only when pairing succeeds
    assert re.search(r"__Host-vrmbox-pair=", cookies) and not re.search(r"__Host-vrmbox=", cookies), cookies
    assert "Secure" in cookies and "HttpOnly" in cookies and "SameSite=Strict" in cookies
    assert "Domain=" not in cookies


def test_a_client_that_does_not_trust_the_box_ca_is_refused(https_app):
    """The certificate chains to the box's own CA only: the system store does not vouch for it."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{https_app['port']}/pair", timeout=10)


def test_plain_http_gets_no_page_on_the_https_port(https_app):
    with socket.create_connection(("127.0.0.1", https_app["port"]), timeout=10) as s:
        s.sendall(b"GET /pair HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            data = s.recv(65536)        # cheroot answers 400 or resets: either way, no page
        except ConnectionResetError:
            data = b""
    assert b"pair" not in data.lower() and b"Set-Cookie" not in data


def test_the_http_port_redirects_and_hands_out_the_ca(https_app):
    plain = f"http://127.0.0.1:{https_app['redirect']}"
    wait_for(lambda: requests.get(plain + "/ca.pem", timeout=5).ok, timeout=10, what="redirect port")
    r = requests.get(plain + "/pair?next=/x", allow_redirects=False, timeout=10)
    assert r.status_code == 308
    assert r.headers["Location"] == f"https://127.0.0.1:{https_app['port']}/pair"
    assert "Set-Cookie" not in r.headers
    ca = requests.get(plain + "/ca.pem", timeout=10)
    assert ca.status_code == 200 and ca.content == https_app["ca"].read_bytes()
    bad = requests.get(plain + "/", headers={"Host": "evil.example/@x"}, allow_redirects=False, timeout=10)
    assert bad.status_code == 400
