"""Shared set-up for the companion app tests: a real broker and a real box daemon, and browsers
(Flask test clients) that pair the way a phone does, with a code from `vrmbox pair`."""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from broker import Broker
from processes import daemon, vrmbox

from companion_app import create_app
from companion_app.box import Box

PROFILE = (("email", "ann@example.org"), ("postal_address", "1 High St, London"))
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def running_box(tmp: Path, with_profile: bool = True) -> Iterator[dict[str, Any]]:
    """A broker and a daemon on a fresh data dir; yields {"data", "socket", "broker", "daemon"}."""
    tmp.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("VRMBOX_CONFIG")
    cfg = tmp / "vrmbox.toml"
    cfg.write_text("# defaults only\n")
    os.environ["VRMBOX_CONFIG"] = str(cfg)
    broker = Broker(tmp / "broker")
    broker.start()
    data = tmp / "box"
    try:
        if with_profile:
            for name, value in PROFILE:
                vrmbox("profile", "set", name, value, data_dir=data)
        proc = daemon(data, broker.url, tmp / "daemon.log").start()
        try:
            yield {"data": data, "socket": data / "control.sock", "broker": broker, "daemon": proc,
                   "tmp": tmp}
        finally:
            proc.stop()
    finally:
        broker.stop()
        if old is None:
            os.environ.pop("VRMBOX_CONFIG", None)
        else:
            os.environ["VRMBOX_CONFIG"] = old


def make_app(sock: Path, **extra: Any) -> Any:
    return create_app({"BOX": Box(sock), "SECRET_KEY": "t" * 64, "TESTING": True, **extra})


def new_code(data: Path) -> str:
    return json.loads(vrmbox("pair", "--json", data_dir=data).stdout)["code"]


def csrf_from(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def api_token(client: Any) -> str:
    return client.get("/api/v1/session").get_json()["csrf_token"]


def pair(client: Any, data: Path, name: str = "test phone") -> None:
    """Pair a test client exactly as a phone does: open /pair, type the box's code."""
    token = csrf_from(client.get("/pair").get_data(as_text=True))
    r = client.post("/pair", data={"code": new_code(data), "name": name, "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/", r.get_data(as_text=True)[:500]


def page_token(client: Any, path: str = "/settings/") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def rules_form(**fields: Any) -> dict[str, Any]:
    """Every field the /rules/ form sends, as a browser sends it with nothing typed (the terms
    checkbox unticked: only its hidden "off"); `fields` override."""
    form: dict[str, Any] = {
        "max_price_amount": "", "max_price_currency": "EUR", "currencies": "", "regions": "",
        "max_delivery_days": "", "vendors_allow": "", "vendors_block": "", "categories": "",
        "require_terms_accepted": "off", "attr_filters": "", "w_price": "1", "w_known_supplier": "0",
        "w_reputation": "0", "w_delivery": "0", "w_brands_liked": "0", "w_brands_disliked": "0",
        "attr_weights": "", "brands_liked": "", "brands_disliked": ""}
    return {**form, **fields}


def test_mdns_advertises_with_the_port_waitress_reports():
    """waitress reports its port as text; zeroconf wants a number (this crashed the installed
    companion, whose tests used to run with --no-mdns only). Loopback only: nothing leaves."""
    from zeroconf import Zeroconf

    from companion_app.cli import SERVICE_NAME, SERVICE_TYPE, advertise
    zc = advertise("127.0.0.1", "8080")
    try:
        info = zc.get_service_info(SERVICE_TYPE, f"{SERVICE_NAME}.{SERVICE_TYPE}", timeout=3000)
        assert info is not None and info.port == 8080
    finally:
        zc.unregister_all_services()
        zc.close()
    assert isinstance(zc, Zeroconf)
