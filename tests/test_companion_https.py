"""The phone app as provisioned: HTTPS only with the box's own certificate, cookies a stranger on
the Wi-Fi cannot read or replay over plain HTTP, and a plain-HTTP port that only redirects and
hands out the box's CA certificate. Real processes, real TLS on loopback."""
from __future__ import annotations

import re
import socket
import sys

import pytest
import requests

from device.config.render import set_key
from processes import Proc, wait_for
from provisioned import layout, new_root, provision, remove_root
from provisioning.launch import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def https_app(tmp_path):
    root = new_root()
    try:
        assert provision(root, free_port()).returncode == 0
        lay = layout(root)
        port, redirect = free_port(), free_port()
        text = lay.config.read_text()
        text = set_key(text, "companion.port", port)
        text = set_key(text, "companion.redirect_port", redirect)
        text = set_key(text, "companion.bind", "127.0.0.1")
        conf = tmp_path / "config.toml"
        conf.write_text(text)
        app = Proc([sys.executable, "-m", "device.cli", "companion", "--config", str(conf), "--no-mdns"],
                   tmp_path / "companion.log").start()
        try:
            yield {"port": port, "redirect": redirect, "ca": lay.pem("ca"), "root": root}
        finally:
            app.stop()
    finally:
        remove_root(root)


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
