"""Every page of the phone app as a person sees it, in Debian's headless Chromium at 360x780,
against a real daemon, broker and two vendor-kit processes, with two intents of the same
category open and an offer hidden by the rules: the menu takes one row, the "live" label sits in
the header and covers no card, attribute names are not cut off, no request gets a 4xx (the
favicon included), prices and times are in the phone's locale and time zone, and axe-core
finds no violation of any impact, by its default rules and by the WCAG 2.2 AA ones, on any
page. A screenshot of each page is written as an artifact (copied to docs/img/ with
VRMBOX_REFRESH_SCREENSHOTS=1)."""
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
VENDORS = {"alpha": ("Alpha Cycles", "Alpha Roadster", 650.0), "beta": ("Beta Bikes", "Beta City", 520.0)}
WCAG22AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
MENU_MAX_PX = 56            # one row of 44 px touch targets and its padding
REFRESH = os.environ.get("VRMBOX_REFRESH_SCREENSHOTS") == "1"

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """The box with two bike intents, both vendors' offers in (the rules hide Alpha's, over the
    highest price), Beta's offer for one of them accepted and its agreement active."""
    tmp = tmp_path_factory.mktemp("companion-pages")
    with running_box(tmp) as box:
        data = box["data"]
        rules = tmp / "rules.json"
        rules.write_text(json.dumps({"version": 1, "filters": {"require_terms_accepted": True,
                                                               "max_price": {"amount": 600, "currency": "EUR"}},
                                     "weights": {"price": 1.0, "known_supplier": 0.3, "reputation": 0.3,
                                                 "delivery": 0.2, "brands_liked": 0.2, "brands_disliked": 0.5,
                                                 "attributes": []},
                                     "brands": {"liked": [], "disliked": []}}))
        vrmbox("rules", "set", str(rules), data_dir=data)
        vrmbox("intent", "add", "bikes", "--description", "a town bike", "--attr", "budget_max=800",
               data_dir=data)
        vrmbox("intent", "add", "bikes", "--description", "a bike for my son", "--attr", "frame_size=S",
               data_dir=data)
        procs = []
        for slug, (name, item, price) in VENDORS.items():
            vdir = tmp / f"vendor-{slug}"
            vrm_vendor("init", "--dir", str(vdir), "--vendor", slug, "--name", name, "--categories", "bikes")
            cat = tmp / f"{slug}.yaml"
            cat.write_text(yaml.safe_dump({
                "currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
                "items": [{"category": "bikes", "name": item, "sku": f"{slug}-1", "brand": name.split()[0],
                           "price": price, "delivery_days": 3}]}))
            procs.append(vendor(vdir, box["broker"].url, cat, tmp / f"v-{slug}.log").start())
        port = free_port()
        app = Proc([sys.executable, "-m", "vrmbox", "-v", "companion", "--bind", "127.0.0.1",
                    "--port", str(port), "--data-dir", str(data)], tmp / "companion.log").start()
        try:
            offers = wait_for(lambda: (o := json.loads(vrmbox("offers", "--all", "--json", data_dir=data).stdout))
                              and len(o) == 4 and o, timeout=60, what="both vendors' offers for both intents")
            # Beta's offer for the first intent accepted and confirmed; the second stays open
            first = json.loads(vrmbox("intent", "list", "--json", data_dir=data).stdout)[-1]["intent"]
            beta = next(o for o in offers if o["vendor"] == "beta" and o["intent"] == first)
            got = json.loads(vrmbox("offer", "accept", "--fields", "email", "--json", "--", beta["offer"],
                                    data_dir=data).stdout)
            agreements = [got["agreement"]]
            vrmbox("agreement", "confirm", "--", agreements[0], data_dir=data)
            wait_for(lambda: any(a["status"] == "active" for a in
                                 json.loads(vrmbox("agreements", "--json", data_dir=data).stdout)),
                     timeout=30, what="the vendor's countersignature")
            shots = tmp / "screenshots"
            shots.mkdir()
            yield {**box, "base": f"http://127.0.0.1:{port}", "shots": shots, "agreements": agreements}
        finally:
            app.stop()
            for p in procs:
                p.stop()


@pytest.fixture(scope="module")
def browser(system):
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def paired(browser, system, locale: str = "en-GB", timezone: str = "Europe/London"):
    ctx = browser.new_context(viewport=PHONE, base_url=system["base"], locale=locale, timezone_id=timezone)
    page = ctx.new_page()
    bad: list[str] = []
    page.on("response", lambda r: bad.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto("/")
    page.fill("#code", new_code(system["data"]))
    page.fill("#name", "Ann's phone")
    page.click("button[type=submit]")
    page.wait_for_url(system["base"] + "/")
    return ctx, page, bad


def shoot(page, system, name: str) -> None:
    path = system["shots"] / f"companion-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 1000
    if REFRESH:
        dest = ROOT / "docs" / "img"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)


def pages(system) -> dict[str, str]:
    """Every page a paired phone has, by screenshot name."""
    intents = json.loads(vrmbox("intent", "list", "--json", data_dir=system["data"]).stdout)
    offers = json.loads(vrmbox("offers", "--all", "--json", data_dir=system["data"]).stdout)
    open_offer = next(o["offer"] for o in offers if o["status"] == "new" and o["eligible"])
    return {"dashboard": "/", "intents": "/intents/", "intent": f"/intents/{intents[0]['intent']}",
            "accept": f"/offers/{open_offer}/accept", "agreements": "/agreements/", "rules": "/rules/",
            "vendors": "/vendors/", "mydata": "/mydata/", "audit": "/audit/", "settings": "/settings/"}


def test_every_page_reads_well_and_axe_finds_nothing(browser, system):
    axe = axe_module.Axe()
    found: dict[str, list] = {}
    ctx = browser.new_context(viewport=PHONE, base_url=system["base"], locale="en-GB")
    page = ctx.new_page()
    page.goto("/pair")
    shoot(page, system, "pair")
    for rules, tag in ((None, "default"), ({"runOnly": {"type": "tag", "values": WCAG22AA}}, "wcag22aa")):
        result = axe.run(page, options=rules) if rules else axe.run(page)
        found[f"pair/{tag}"] = result.response["violations"]
    ctx.close()

    ctx, page, bad = paired(browser, system)
    for name, path in pages(system).items():
        page.goto(path)
        page.wait_for_load_state("load")
        # the live label lives in the header and covers no card
        header = page.eval_on_selector("header.top", "e => e.getBoundingClientRect().toJSON()")
        print(f"MENU {name}: {header['height']:.0f} of {PHONE['height']} px")
        assert header["height"] <= MENU_MAX_PX, (name, header)
        if name in ("dashboard", "agreements"):
            page.wait_for_function("() => document.getElementById('live-status').textContent === 'live'")
            overlaps = page.evaluate("""() => {
              const s = document.getElementById('live-status').getBoundingClientRect();
              return [...document.querySelectorAll('main .card, main .offer, main .agreement')].filter(c => {
                const r = c.getBoundingClientRect();
                return r.left < s.right && s.left < r.right && r.top < s.bottom && s.top < r.bottom; }).length; }""")
            assert overlaps == 0, name
        shoot(page, system, name)
        for rules, tag in ((None, "default"), ({"runOnly": {"type": "tag", "values": WCAG22AA}}, "wcag22aa")):
            result = axe.run(page, options=rules) if rules else axe.run(page)
            found[f"{name}/{tag}"] = result.response["violations"]
    # the More menu, open, over the page
    page.goto("/")
    page.click(".menu summary")
    assert page.is_visible(".menu details a[href='/audit/']")
    shoot(page, system, "menu")
    result = axe.run(page)
    found["menu/default"] = result.response["violations"]
    ctx.close()
    violations = {k: [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in vs]
                  for k, vs in found.items() if vs}
    assert violations == {}
    assert bad == [], bad                          # no 404, not even a favicon


def test_the_one_row_menu_and_the_favicon(browser, system):
    ctx, page, bad = paired(browser, system)
    try:
        height = page.eval_on_selector("header.top", "e => e.getBoundingClientRect().height")
        assert height <= MENU_MAX_PX
        links = page.eval_on_selector_all("header .menu > ul > li > a", "els => els.map(e => e.textContent)")
        assert links == ["Offers", "Intents", "Agreements"]
        icon = page.evaluate("""async () => { const href = document.querySelector('link[rel=icon]').href;
                                const r = await fetch(href); return [r.status, r.headers.get('content-type')]; }""")
        assert icon[0] == 200 and icon[1].startswith("image/svg+xml")
        # attribute names are not cut off: each name box shows its whole text
        page.goto("/intents/")
        page.select_option("#tpl", "bikes")
        cut = page.evaluate("""() => [...document.querySelectorAll('input.attr-name')]
            .filter(i => i.value && i.scrollWidth > i.clientWidth).map(i => i.value)""")
        assert cut == [] and page.input_value("#attr_name_1") == "postcode_district"
    finally:
        ctx.close()
    assert bad == []


def test_counts_scores_vendor_names_and_words_on_the_dashboard(browser, system):
    ctx, page, _ = paired(browser, system)
    try:
        counts = page.eval_on_selector_all("#offers .counts", "els => els.map(e => e.textContent)")
        assert len(counts) == 2
        for text in counts:
            assert text.startswith("2 offers received: ") and ", 1 hidden by your rules" in text and "— show" in text, text
        names = page.eval_on_selector_all("#offers .offer .vendor", "els => els.map(e => [e.textContent, e.title])")
        assert names and all(n == ["Beta Bikes", "beta"] for n in names), names
        page.click("#offers .offer >> nth=0 >> summary")
        why = page.inner_text("#offers .offer >> nth=0 >> .explain")
        assert "Price" in why and "within your highest price" in why and "max_price" not in why
        assert " of " in page.inner_text("#offers .offer >> nth=0 >> .score")
        page.click("#offers .counts >> nth=0 >> text=show")
        page.wait_for_selector("#not-shown")
        hidden = page.inner_text("main")
        assert "Alpha Cycles" in hidden and "over your highest price" in hidden
        assert page.query_selector(".ineligible a.button") is None          # no Accept there
        page.goto("/audit/")
        assert "Sent your Email to Beta Bikes." in page.inner_text(".timeline")
        assert "Paired a phone: “Ann's phone”." in page.inner_text(".timeline")
        assert page.query_selector("main code") is None
    finally:
        ctx.close()


def test_prices_and_times_in_the_phones_locale_and_time_zone(browser, system):
    ctx, page, _ = paired(browser, system, locale="de-DE", timezone="Asia/Tokyo")
    try:
        price = page.inner_text("#offers .offer >> nth=0 >> data.money")
        assert price.replace("\u00a0", " ") == "520,00 €", price
        assert page.get_attribute("#offers .offer >> nth=0 >> data.money", "title") == "520.00 EUR"
        shown = page.eval_on_selector("#offers time", "t => [t.textContent, t.getAttribute('datetime')]")
        expected = page.evaluate("""(iso) => new Intl.DateTimeFormat('de-DE',
            {dateStyle: 'medium', timeStyle: 'short', timeZone: 'Asia/Tokyo'}).format(new Date(iso))""", shown[1])
        assert shown[0] == expected and "UTC" not in shown[0]
        # parts re-rendered live are localised too
        page.evaluate("() => document.getElementById('offers').innerHTML = document.getElementById('offers').innerHTML"
                      ".replaceAll('data-localised=\"1\"', '')")
        page.wait_for_function("() => !document.querySelector('#offers data.money').textContent.includes('EUR')")
    finally:
        ctx.close()
