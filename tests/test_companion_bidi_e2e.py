"""How vendor text READS in a real browser (Debian's headless Chromium): the pages of the phone
app, rendered against the fake box of test_companion_textsafe.py, are laid out by Chromium and
the on-screen position of each piece of text is measured. "Invoice U+202E fdp.exe" must show
"fdp" left of "exe"; "900.5 EUR" in the same line as such a name must show 900.5 left of EUR;
and a genuine right-to-left vendor name must not pull the price beside it to its side."""
from __future__ import annotations

from pathlib import Path

import pytest

from companion_app import create_app, security
from test_companion_textsafe import SECRET, FakeBox, _offer
from test_textsafe import RLO

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
HEBREW = "\u05e9\u05dc\u05d5\u05dd \u05d0\u05d5\u05e4\u05e0\u05d9\u05d9\u05dd"      # "shalom ofanayim"

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")]

# The left edge, on screen, of the first occurrence of each string inside the selected element.
LEFT_OF = """([selector, needles]) => {
  const root = document.querySelector(selector);
  return needles.map(s => {
    const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      const i = n.data.indexOf(s);
      if (i >= 0) {
        const r = document.createRange();
        r.setStart(n, i); r.setEnd(n, i + s.length);
        return r.getBoundingClientRect().left;
      }
    }
    return null;
  });
}"""


@pytest.fixture(scope="module")
def chromium():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def rendered(path: str, **offer: str) -> str:
    box = FakeBox()
    box.answers["offers"] = [_offer(1, **offer)]
    app = create_app({"BOX": box, "SECRET_KEY": "t" * 64, "TESTING": True, "READ_CACHE_S": 0})
    c = app.test_client()
    with c.session_transaction() as s:
        s[security.SESSION_KEY] = SECRET
    r = c.get(path)
    assert r.status_code == 200
    return r.get_data(as_text=True)


def lefts(chromium, html: str, selector: str, *needles: str) -> list[float]:
    page = chromium.new_page(viewport={"width": 360, "height": 780})
    try:
        page.set_content(html)
        got = page.evaluate(LEFT_OF, [selector, list(needles)])
    finally:
        page.close()
    assert None not in got, (needles, got)
    return got


@pytest.mark.parametrize("path,selector", [("/offers/o1/accept", "main .card"),
                                           ("/intents/i1", "main .offer")])
def test_an_override_in_the_item_does_not_reverse_it_nor_the_price(chromium, path, selector):
    html = rendered(path)
    fdp, exe, price, eur = lefts(chromium, html, selector, "fdp", "exe", "900.5", "EUR")
    assert fdp < exe, "the file name reads reversed"
    assert price < eur, "the price reads reversed (RUE 5.009)"


def test_an_override_in_the_currency_does_not_turn_it_around(chromium):
    html = rendered("/offers/o1/accept", item="Bike", currency=f"{RLO}EUR")
    price, eu, ur = lefts(chromium, html, "main .card", "900.5", "EU", "UR")
    assert price < eu < ur, "the currency reads RUE"


def test_a_right_to_left_vendor_name_keeps_to_itself(chromium):
    """The name reads right to left as it should; the price after it stays where it is written."""
    html = rendered("/offers/o1/accept", item="Bike", vendor=HEBREW)
    bike, name, price, eur = lefts(chromium, html, "main .card", "Bike", HEBREW.split()[0], "900.5", "EUR")
    assert bike < name < price < eur
