"""The phone app as an installed box serves it, for tests: `vrmbox provision` makes the box's CA
and the companion's certificate (its SAN names localhost, 127.0.0.1, vrmbox.local and the host's
names) and writes a config with companion.cert_file, key_file, ca_file and secret_file; the app
is started from that config, bound to loopback only. And a browser's trust store: an NSS
database in a throwaway $HOME, which is where Chromium on Linux reads the CAs a person installed
(`certutil`, package libnss3-tools)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from device.config.render import set_key
from processes import Proc
from provisioned import layout, new_root, provision, remove_root
from provisioning.launch import free_port

CA_NICKNAME = "VRM box test CA"
CERTUTIL = shutil.which("certutil")


@contextmanager
def https_companion(tmp: Path, data_dir: Path | None = None, socket: Path | None = None,
                    bind: str = "127.0.0.1") -> Iterator[dict[str, Any]]:
    """A provisioned root and `vrmbox companion --config <its config>` serving HTTPS on a free
    port, with its plain-HTTP redirect port; `data_dir`/`socket`: point the app at a box that
    runs elsewhere (a test's own daemon) instead of the provisioned root's. Yields {"port",
    "redirect", "ca" (the CA's PEM file), "config", "root"}."""
    root = new_root()
    try:
        done = provision(root, free_port())
        assert done.returncode == 0, done.stdout + done.stderr
        lay = layout(root)
        port, redirect = free_port(), free_port()
        text = lay.config.read_text()
        text = set_key(text, "companion.port", port)
        text = set_key(text, "companion.redirect_port", redirect)
        text = set_key(text, "companion.bind", bind)
        if data_dir is not None:
            text = set_key(text, "data_dir", str(data_dir))
        if socket is not None:
            text = set_key(text, "control.socket", str(socket))
        conf = tmp / "companion-https.toml"
        conf.write_text(text)
        app = Proc([sys.executable, "-m", "vrmbox", "-v", "companion", "--config", str(conf), "--no-mdns"],
                   tmp / "companion-https.log").start()
        try:
            yield {"port": port, "redirect": redirect, "ca": lay.pem("ca"), "config": conf, "root": root}
        finally:
            app.stop()
    finally:
        remove_root(root)


def _certutil(*args: str) -> None:
    assert CERTUTIL, "certutil not found (Debian package libnss3-tools, see setup.sh)"
    done = subprocess.run([CERTUTIL, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"certutil {' '.join(args)}: {done.stdout}{done.stderr}"


def nss_home(home: Path, ca_pem: Path | None) -> Path:
    """A $HOME whose NSS database ($HOME/.pki/nssdb) trusts `ca_pem` to identify web sites, as
    a person's does after importing the box's CA in the browser's settings; with None, the same
    database with nothing added (only what the browser trusts by itself)."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    _certutil("-d", f"sql:{db}", "-N", "--empty-password")
    if ca_pem is not None:
        _certutil("-d", f"sql:{db}", "-A", "-t", "C,,", "-n", CA_NICKNAME, "-i", str(ca_pem))
    return home
