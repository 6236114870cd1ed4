"""The companion app in a real headless Chromium (Debian's, driven by Playwright; nothing is
downloaded), served by `vrmbox companion` (cheroot), against a real daemon, broker and vendor-kit
processes: pair with the box's code, cast an intent, watch offers arrive without a reload, accept,
confirm with the box's button, see the agreement and its audit entry, revoke, see the deletion
receipt arrive. Phone-size screenshots of every main page are written as artifacts (and copied to
docs/img/ when VRMBOX_REFRESH_SCREENSHOTS=1); axe-core finds no serious or critical violation."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from broker import free_port
from processes import ROOT, Proc, vendor, vrm_vendor, vrmbox, wait_for
from test_companion_helpers import new_code, running_box

playwright = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 360, "height": 780}
VENDORS = {"alpha": ("Alpha Roadster", 650.0), "beta": ("Beta City", 520.0)}
PAGES = {"pair": "/pair", "dashboard": "/", "intents": "/intents/", "agreements": "/agreements/",
         "rules": "/rules/", "vendors": "/vendors/", "mydata": "/mydata/", "audit": "/audit/",
         "settings": "/settings/"}
REFRESH = os.environ.get("VRMBOX_REFRESH_SCREENSHOTS") == "1"

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("companion-e2e")
    with running_box(tmp) as box:
        port = free_port()
        app = Proc([sys.executable, "-m", "device.cli", "-v", "companion", "--bind", "127.0.0.1",
                    "--port", str(port), "--data-dir", str(box["data"])], tmp / "companion.log").start()
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
        try:
            yield {**box, "base": f"http://127.0.0.1:{port}", "vendors": vendors, "shots": shots,
                   "procs": []}
        finally:
            app.stop()


@pytest.fixture(scope="module")
def browser(system):
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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

    # pair with the code the box shows
    page.goto("/")
    assert page.url.endswith("/pair")
    shoot(page, system, "pair")
    code = new_code(system["data"])
    page.fill("#code", code[:-1] + str((int(code[-1]) + 1) % 10))
    page.click("button[type=submit]")
    assert "not the code shown on the box" in page.inner_text("#pair-error")
    page.fill("#code", code[:5] + " " + code[5:])               # as the box shows it
    page.fill("#name", "Ann's phone")
    page.click("button[type=submit]")
    page.wait_for_url(system["base"] + "/")

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


def test_no_serious_accessibility_violation_on_any_page(browser, system):
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
