"""The box's "Pair phone" screen against what the daemon really answers: `pair_code` gives the
code (device/pairing.py `new_code`: code, display, expires_at, no URL); the URL and the
certificate's fingerprint come from the config, read at the edge (device/ui/app.py)."""
from __future__ import annotations

import argparse
import datetime as dt
import re
from dataclasses import replace

import pytest
from PIL import ImageChops

from device import config, pairing
from device.store import Store
from device.ui.app import CERT_LIMIT, companion_fingerprint_of, companion_url_of
from device.ui.samples import FINGERPRINT, NOW, states
from device.ui.screens import font, frame, pair_cert_shown, pair_text, qr_side
from device.ui.state import MENU, Loaded
from provisioning import pki
from test_ui_navigation import press, run

URL = "https://vrmbox.local:8443/pair"


@pytest.fixture
def answer(tmp_path):
    """The daemon's own answer to `pair_code`, from a real Store."""
    store = Store.open(tmp_path / "box", clock=lambda: NOW)
    try:
        yield pairing.new_code(store)
    finally:
        store.close()


def same(a, b) -> bool:
    return ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def on_pair_screen(pair_url, **kw):
    """The person chose "Pair phone" in the menu: the screen waits for the daemon's code."""
    menu = states()["menu"]
    s = replace(menu, cursor=[k for k, _ in MENU].index("pair"), pair_url=pair_url,
                data=replace(menu.data, pair=None), **kw)
    s, reqs = run(s, *press("select"))
    assert s.screen == "pair" and [r.op for r in reqs] == ["pair_code"]
    return s


@pytest.mark.parametrize("pair_url", [URL, None], ids=["installed", "development"])
@pytest.mark.parametrize("height", [64, 32])
def test_the_daemons_answer_shows_a_code_not_loading(answer, pair_url, height):
    assert "url" not in answer                       # what the daemon sends: no address
    loading = on_pair_screen(pair_url)
    shown, _ = run(loading, Loaded("pair_code", answer))
    assert not same(frame(shown, 128, height, NOW), frame(loading, 128, height, NOW))


def test_the_samples_hold_what_the_daemon_sends(answer):
    """The golden frames are drawn from what a real daemon answers, so they cannot hide a
    screen that waits for a key the daemon never sends."""
    for hostile in (False, True):
        pair = states(hostile)["pair"].data.pair
        assert set(pair) == set(answer)
        assert re.fullmatch(r"\d{5} \d{5}", pair["display"]) and pair["display"].replace(" ", "") == pair["code"]


@pytest.mark.parametrize("height", [64, 32])
@pytest.mark.parametrize("url", [URL, "https://raspberrypi-kitchen.local:8443/pair"], ids=["short", "long"])
def test_the_code_is_the_daemons_and_the_qr_the_configs(answer, height, url):
    shown, _ = run(on_pair_screen(url, cert_fingerprint=FINGERPRINT), Loaded("pair_code", answer))
    qr_url, lines = pair_text(shown, 128, height)
    assert qr_url == url
    x = qr_side(url, height) + 3
    assert all(font().getlength(line) <= 128 - x - 1 for line in lines), lines
    first, second = answer["display"].split()
    text = " ".join(lines)
    assert first in text and second in text and text.index(first) < text.index(second)
    assert lines[-1].startswith("v cert")               # DOWN leads to the fingerprint


@pytest.mark.parametrize("height", [64, 32])
def test_a_development_box_shows_the_code_and_where_to_type_it(answer, height):
    shown, _ = run(on_pair_screen(None, cert_fingerprint=None), Loaded("pair_code", answer))
    qr_url, lines = pair_text(shown, 128, height)
    assert qr_url == ""                                  # no address known: nothing to scan
    text = " ".join(lines)
    assert answer["display"] in text and "vrmbox companion" in text
    assert len(lines) <= height // 9 and all(font().getlength(x) <= 126 for x in lines)


@pytest.mark.parametrize("height,views", [(64, 1), (32, 4)])
def test_down_shows_every_pair_of_the_fingerprint_and_up_goes_back(answer, height, views):
    s, _ = run(replace(on_pair_screen(URL, cert_fingerprint=FINGERPRINT), size=(128, height)), Loaded("pair_code", answer))
    code_page = frame(s, 128, height, NOW)
    seen: list[str] = []
    pages = []
    for _ in range(views + 3):                           # pressing on past the end stays there
        s, reqs = run(s, *press("down"))
        assert reqs == [] and s.screen == "pair"
        start, rows = pair_cert_shown(s, height)
        pages.append(s.scroll)
        for i, row in enumerate(rows):
            if start + i == len(seen):
                seen.append(row)
    assert ":".join(seen) == FINGERPRINT               # all 32 pairs, in order, row by row
    assert pages == list(range(1, views + 1)) + [views] * 3
    assert not same(frame(s, 128, height, NOW), code_page)
    s, _ = run(s, *[e for _ in range(views + 2) for e in press("up")])
    assert s.scroll == 0 and same(frame(s, 128, height, NOW), code_page)


def test_without_a_certificate_down_stays_on_the_code(answer):
    s, _ = run(on_pair_screen(None, cert_fingerprint=None), Loaded("pair_code", answer))
    t, _ = run(s, *press("down"))
    assert t == s and "v cert" not in " ".join(pair_text(t, 128, 64)[1])


def cert_config(tmp_path, pem: bytes | None):
    cert = tmp_path / "companion.pem"
    if pem is not None:
        cert.write_bytes(pem)
    p = tmp_path / "vrmbox.toml"
    p.write_text(f"data_dir = '{tmp_path}/data'\n[companion]\nport = 8443\ncert_file = '{cert}'\n"
                 f"key_file = '{tmp_path}/companion.key'\n")
    return config.load_config(p, env={"HOME": str(tmp_path)}, reader=config.UI)


@pytest.fixture(scope="module")
def leaf():
    now = dt.datetime.now(dt.timezone.utc)
    ca = pki.make_ca("VRM box CA", now)
    return ca, pki.issue_server(ca, ["vrmbox.local"], now)


def test_the_fingerprint_is_the_served_certificates(tmp_path, leaf):
    """What `vrmbox provision` printed and wrote to tls/companion.sha256, from the certificate
    the phone app serves; its chain after it changes nothing."""
    ca, cert = leaf
    assert companion_fingerprint_of(cert_config(tmp_path, cert.cert_pem + ca.cert_pem)) == \
        pki.fingerprint(cert.cert_pem)


@pytest.mark.parametrize("content", [None, b"not a certificate", b"-----BEGIN CERTIFICATE-----\n!!\n"
                                     b"-----END CERTIFICATE-----\n", b"\xff\xfe", b"x" * (CERT_LIMIT + 1)],
                         ids=["missing", "text", "bad-base64", "not-utf8", "too-big"])
def test_no_fingerprint_when_the_certificate_cannot_be_read(tmp_path, content):
    cfg = cert_config(tmp_path, b"placeholder")
    path = cfg.companion.cert_file
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    assert companion_fingerprint_of(cfg) is None


def test_a_development_box_has_no_fingerprint(tmp_path):
    p = tmp_path / "vrmbox.toml"
    p.write_text(f"data_dir = '{tmp_path}/data'\n")
    assert companion_fingerprint_of(config.load_config(p, env={"HOME": str(tmp_path)}, reader=config.UI)) is None


def test_vrmbox_ui_hands_the_address_and_fingerprint_to_the_app(tmp_path, leaf, monkeypatch):
    """The edge: `vrmbox ui` reads both from the config and gives them to the App."""
    from device.ui import app as app_module
    from device.ui.cli import cmd_ui

    class Stop(Exception):
        pass

    got: dict = {}

    def fake_app(*args, **kw):
        got.update(kw)
        raise Stop

    cfg = cert_config(tmp_path, leaf[1].cert_pem)
    monkeypatch.setattr(app_module, "App", fake_app)
    args = argparse.Namespace(config=tmp_path / "vrmbox.toml", data_dir=None, profile=None, display="dummy",
                              frames=None, json=False)
    with pytest.raises(Stop):
        cmd_ui(args)
    assert got["pair_url"] == companion_url_of(cfg)
    assert got["cert_fingerprint"] == pki.fingerprint(leaf[1].cert_pem)
