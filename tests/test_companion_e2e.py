"""The companion app in a real headless Chromium (Debian's, driven by Playwright; nothing is
downloaded) against a real daemon, broker and vendor-kit processes, served as an installed box
serves it: `vrmbox companion --config` with the certificate, key and CA that `vrmbox provision`
made, so over HTTPS only, with the `__Host-vrmbox` Secure cookie. The browser opens the box by
the name a phone uses (vrmbox.local, mapped to loopback with --host-resolver-rules; the
certificate's SAN has it) and trusts the box's CA the way a person makes it: the CA downloaded
from the box's plain-HTTP port and imported into the browser's own trust store (an NSS
database in a throwaway $HOME, which Chromium on Linux reads), never by ignoring certificate
errors. The same browser without the CA in its store gets a certificate error instead of the
page, so the trust is what lets it in.

The flow: from the plain-HTTP address to HTTPS, pair with the box's code, cast an intent,
watch offers arrive without a reload, accept, confirm with the box's button, see the agreement
and its audit entry, revoke, see the deletion receipt arrive. Phone-size screenshots of every
main page are written as artifacts (and copied to docs/img/ when VRMBOX_REFRESH_SCREENSHOTS=1).

Plain HTTP on loopback is the development set-up (`vrmbox companion --bind 127.0.0.1 --port N`,
no certificate): only the accessibility test runs there (axe-core finds no serious or critical
violation; what it checks does not depend on the transport), so that set-up keeps a browser
test too."""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from broker import free_port
from processes import ROOT, Proc, vendor, vrm_vendor, vrmbox, wait_for
from test_companion_helpers import new_code, running_box
from tls_helpers import CERTUTIL, https_companion, nss_home

playwright = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")

CHROMIUM = "/usr/bin/chromium"
HOST = "vrmbox.local"           # the name the box advertises by mDNS, as a phone opens it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--host-resolver-rules=MAP {HOST} 127.0.0.1"]
PHONE = {"width": 360, "height": 780}
VENDORS = {"alpha": ("Alpha Roadster", 650.0), "beta": ("Beta City", 520.0)}
PAGES = {"pair": "/pair", "dashboard": "/", "intents": "/intents/", "agreements": "/agreements/",
         "rules": "/rules/", "vendors": "/vendors/", "mydata": "/mydata/", "audit": "/audit/",
         "settings": "/settings/"}
REFRESH = os.environ.get("VRMBOX_REFRESH_SCREENSHOTS") == "1"

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed"),
              pytest.mark.skipif(CERTUTIL is None, reason="certutil not installed (libnss3-tools)")]


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("companion-e2e")
    with running_box(tmp) as box:
        vendors = {}
        for slug, (name, price) in VENDORS.items():
            vdir = tmp / f"vendor-{slug}"
            vrm_vendor("init", "--dir", str(vdir), "--vendor", slug, "--name", slug.title(),
                       "--categories", "bikes")
            cat = tmp / f"{slug}.yaml"
            cat.write_text(yaml.safe_dump({
                "currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
                "items": [{"category": "bikes", "name": name, "sku": f"{slug}-1", "brand": slug.title(),
                           "price": price, "delivery_days": 3}]}))
            vendors[slug] = (vdir, cat)
        shots = tmp / "screenshots"
        shots.mkdir()
        yield {**box, "vendors": vendors, "shots": shots, "procs": []}


@pytest.fixture(scope="module")
def system(box):
    """The app as installed: HTTPS from the provisioned config, on loopback, against this box."""
    with https_companion(box["tmp"], data_dir=box["data"], socket=box["socket"]) as app:
        yield {**box, **app, "base": f"https://{HOST}:{app['port']}", "plain": f"http://{HOST}:{app['redirect']}"}


@pytest.fixture(scope="module")
def dev_system(box):
    """The development set-up: no certificate, plain HTTP on loopback."""
    port = free_port()
    app = Proc([sys.executable, "-m", "vrmbox", "-v", "companion", "--bind", "127.0.0.1",
                "--port", str(port), "--data-dir", str(box["data"])], box["tmp"] / "companion-dev.log").start()
    try:
        yield {**box, "base": f"http://127.0.0.1:{port}"}
    finally:
        app.stop()


@pytest.fixture(scope="module")
def downloaded_ca(system):
    """The box's CA as a person gets it: from the box's plain-HTTP port (docs/companion.md)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{system['redirect']}/ca.pem", timeout=10) as r:
        pem = r.read()
    assert pem == system["ca"].read_bytes()
    path = system["tmp"] / "vrmbox-ca.pem"
    path.write_bytes(pem)
    return path


@pytest.fixture(scope="module")
def pw():
    with playwright.sync_playwright() as p:
        yield p


def launch(pw, home: Path):
    """Chromium reading its trust store from `home` (Linux: $HOME/.pki/nssdb)."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                              env={**os.environ, "HOME": str(home)})


@pytest.fixture(scope="module")
def browser(pw, downloaded_ca, tmp_path_factory):
    """The phone's browser after the person imported the box's CA."""
    b = launch(pw, nss_home(tmp_path_factory.mktemp("home-with-ca"), downloaded_ca))
    try:
        yield b
    finally:
        b.close()


def shoot(page, system, name: str) -> None:
    path = system["shots"] / f"companion-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 1000
    if REFRESH:
        dest = ROOT / "docs" / "img"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)


def paired_page(browser, system, name: str = "Chromium phone"):
    ctx = browser.new_context(viewport=PHONE, base_url=system["base"])
    page = ctx.new_page()
    page.goto("/")
    assert page.url.endswith("/pair")
    page.fill("#code", new_code(system["data"]))
    page.fill("#name", name)
    page.click("button[type=submit]")
    page.wait_for_url(system["base"] + "/")
    return ctx, page


def test_pair_intent_live_offers_accept_confirm_audit_revoke(browser, system):
    ctx = browser.new_context(viewport=PHONE, base_url=system["base"])
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # the address typed by hand is the plain-HTTP one: it only redirects, to HTTPS, which the
    # browser accepts because the certificate chains to the CA imported into its store
    response = page.goto(system["plain"] + "/")
    assert page.url == system["base"] + "/pair"
    tls = response.security_details()
    assert tls["issuer"] == "vrmbox local CA", tls
    assert page.evaluate("() => window.isSecureContext") is True

    # pair with the code the box shows
    shoot(page, system, "pair")
    code = new_code(system["data"])
    page.fill("#code", code[:-1] + str((int(code[-1]) + 1) % 10))
    page.click("button[type=submit]")
    assert "not the code shown on the box" in page.inner_text("#pair-error")
    page.fill("#code", code[:5] + " " + code[5:])               # as the box shows it
    page.fill("#name", "Ann's phone")
    page.click("button[type=submit]")
    page.wait_for_url(system["base"] + "/")
    session = [c for c in ctx.cookies() if c["name"] == "__Host-vrmbox"]
    assert len(session) == 1, ctx.cookies()
    assert session[0]["secure"] and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert session[0]["path"] == "/" and session[0]["domain"] == HOST      # host-only: no Domain

    # an intent, previewed, then cast (no vendor is running yet)
    page.goto("/intents/")
    page.fill("#attr_name_0", "budget_max")
    page.fill("#attr_value_0", "1200")
    page.check("#attr_reveal_0")
    page.fill("#attr_value_1", "N1")            # postcode_district, not ticked: stays on the box
    page.click("#new-intent button[type=submit]")
    page.wait_for_selector("#wire, .field-error, .flash", timeout=30_000)
    assert page.query_selector("#wire"), page.inner_text("main")
    wire = json.loads(page.inner_text("#wire"))
    assert wire == {"category": "bikes", "attributes": {"budget_max": 1200}}
    shoot(page, system, "intent-preview")
    page.click("text=Cast it")
    page.wait_for_url(system["base"] + "/")
    assert "No offers" in page.inner_text("#offers")
    page.wait_for_function("() => document.getElementById('live-status').textContent === 'live'")
    page.evaluate("() => { window.__noReload = true; }")

    # vendors start now; their offers arrive over the real broker and appear by themselves
    for slug, (vdir, cat) in system["vendors"].items():
        system["procs"].append(vendor(vdir, system["broker"].url, cat, system["tmp"] / f"v-{slug}.log").start())
    try:
        page.wait_for_function("() => document.querySelectorAll('#offers .offer').length === 2",
                               timeout=60_000)
        assert page.evaluate("() => window.__noReload") is True
        vendors_shown = page.eval_on_selector_all("#offers .offer .vendor", "els => els.map(e => e.title)")
        assert vendors_shown == ["beta", "alpha"]           # cheapest first under the default rules
        shoot(page, system, "dashboard")

        # accept the best one: nothing is sent until the box's button is pressed
        page.click("#offers .offer >> nth=0 >> text=Accept…")
        page.wait_for_selector("#purpose")
        assert page.is_checked("#f-email")                     # the box's default field
        page.check("#f-postal_address")
        page.fill("#purpose", "deliver the bike")
        shoot(page, system, "accept")
        page.click("text=Accept and sign")
        page.wait_for_url("**/agreements/**")
        card = page.wait_for_selector(".agreement[data-status=pending_confirmation]")
        agreement = card.get_attribute("data-agreement")
        assert "Press the button on the box" in card.inner_text()
        beta = str(system["vendors"]["beta"][0])
        assert json.loads(vrm_vendor("disclosures", "--dir", beta, "--json").stdout) == []
        shoot(page, system, "agreements-pending")

        # the press on the box (single-user setup: the CLI uses button.sock); the page follows live
        page.evaluate("() => { window.__noReload = true; }")
        vrmbox("agreement", "confirm", "--", agreement, data_dir=system["data"])
        page.wait_for_selector(f".agreement[data-agreement='{agreement}'][data-status=active]", timeout=30_000)
        assert page.evaluate("() => window.__noReload") is True
        got = wait_for(lambda: json.loads(vrm_vendor("disclosures", "--dir", beta, "--json").stdout),
                       what="the vendor got the disclosure")
        assert got[0]["fields"] == {"email": "ann@example.org", "postal_address": "1 High St, London"}
        shoot(page, system, "agreements")

        # the audit log shows it, and verifies
        page.goto("/audit/")
        assert "The log verifies" in page.inner_text("#verify")
        events = page.eval_on_selector_all(".timeline .entry", "els => els.map(e => e.dataset.event)")
        assert "agreement_confirmed" in events and "phone_paired" in events
        shoot(page, system, "audit")

        # revoke; the vendor deletes and its signed receipt arrives without a reload
        page.goto("/agreements/")
        page.evaluate("() => { window.__noReload = true; }")
        page.click(f".agreement[data-agreement='{agreement}'] >> text=Revoke")
        page.wait_for_selector(f".agreement[data-agreement='{agreement}'] .revocation")
        page.evaluate("() => { window.__noReload = true; }")
        page.wait_for_function(
            f"() => (document.querySelector(\".agreement[data-agreement='{agreement}'] .revocation\") || {{}})"
            ".textContent === 'received'", timeout=30_000)
        assert page.evaluate("() => window.__noReload") is True
        assert json.loads(vrm_vendor("disclosures", "--dir", beta, "--json").stdout) == []
        shoot(page, system, "agreements-revoked")

        for name in ("intents", "rules", "vendors", "mydata", "settings"):
            page.goto(PAGES[name])
            shoot(page, system, name)
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        for p in system["procs"]:
            p.stop()
        ctx.close()


def test_the_same_browser_without_the_box_ca_refuses_the_app(pw, system, tmp_path):
    """Chromium with an NSS store of its own but without the box's CA: a certificate error,
    no page, for the very address the flow above opens."""
    b = launch(pw, nss_home(tmp_path / "home-without-ca", None))
    try:
        page = b.new_page(viewport=PHONE)
        with pytest.raises(playwright.Error, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(system["base"] + "/pair")
        # its plain-HTTP port hands it only a redirect to the refused address
        with pytest.raises(playwright.Error, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(system["plain"] + "/pair")
    finally:
        b.close()


def test_no_serious_accessibility_violation_on_any_page(browser, dev_system):
    system = dev_system             # the development set-up: plain HTTP on loopback
    axe = axe_module.Axe()
    ctx = browser.new_context(viewport=PHONE, base_url=system["base"])
    page = ctx.new_page()
    page.goto("/pair")
    found = {}
    result = axe.run(page)
    found["pair"] = [v for v in result.response["violations"] if v["impact"] in ("serious", "critical")]
    ctx.close()
    ctx, page = paired_page(browser, system, "axe")
    for name, path in PAGES.items():
        if name == "pair":
            continue
        page.goto(path)
        result = axe.run(page)
        found[name] = [v for v in result.response["violations"] if v["impact"] in ("serious", "critical")]
    ctx.close()
    bad = {k: [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in vs]
           for k, vs in found.items() if vs}
    assert bad == {}
    assert set(found) == set(PAGES)
