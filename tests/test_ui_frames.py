"""Every screen drawn on luma's `dummy` device, compared pixel for pixel with golden PNGs in
tests/golden/ui/, at 128x64 and 128x32, with ordinary and hostile vendor text; and the picture
in docs/ui.md (docs/img/ui-screens.png), composed from those golden frames.

Refresh after an intended change (then look at the PNGs before committing them):
    VRMBOX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_ui_frames.py
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from device.ui.samples import NOW, states
from device.ui.screens import frame, render
from hardware.display import make_display
from hardware.profile import emulated_profile

GOLDEN = Path(__file__).parent / "golden" / "ui"
PICTURE = Path(__file__).resolve().parent.parent / "docs" / "img" / "ui-screens.png"
PICTURE_FRAMES = ("status", "matches", "detail", "accept", "pending", "intents", "agreements", "pair")
UPDATE = os.environ.get("VRMBOX_UPDATE_GOLDEN") == "1"
CASES = [(name, height, hostile) for hostile in (False, True) for height in (64, 32)
         for name in states(hostile)]


def _draw_on_dummy(state, height):
    """Through luma exactly as the app does: a canvas on the dummy device."""
    from luma.core.render import canvas
    device = make_display(emulated_profile(height), "dummy")
    with canvas(device) as draw:
        render(state, draw, device.width, device.height, NOW)
    return device.image.convert("1")


@pytest.mark.parametrize("name,height,hostile", CASES,
                         ids=[f"{n}-{h}-{'hostile' if x else 'plain'}" for n, h, x in CASES])
def test_frame_matches_golden(name, height, hostile):
    state = states(hostile)[name]
    img = _draw_on_dummy(state, height)
    assert img.size == (128, height)
    path = GOLDEN / f"{name}-{height}{'-hostile' if hostile else ''}.png"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        img.save(path)
    assert path.is_file(), f"no golden frame {path.name}: run with VRMBOX_UPDATE_GOLDEN=1"
    golden = Image.open(path).convert("1")
    diff = ImageChops.difference(golden.convert("L"), img.convert("L")).getbbox()
    assert diff is None, f"{path.name} differs from the golden frame in box {diff}"


def test_frame_helper_draws_the_same_as_the_luma_canvas():
    state = states()["matches"]
    a = _draw_on_dummy(state, 64)
    b = frame(state, 128, 64, NOW)
    assert ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def test_a_changed_frame_is_detected():
    """The comparison above is not vacuous: one moved pixel differs."""
    state = states()["status"]
    img = frame(state, 128, 64, NOW)
    shifted = frame(state, 128, 64, NOW, shift=(1, 0))
    assert ImageChops.difference(img.convert("L"), shifted.convert("L")).getbbox() is not None


def compose_picture() -> Image.Image:
    """The main screens at 128x64 (top) and 128x32 (below), from the golden files, 2x."""
    pad, cols = 6, 4
    rows = [[Image.open(GOLDEN / f"{n}-{h}.png").convert("L") for n in PICTURE_FRAMES] for h in (64, 32)]
    height = sum(((len(r) + cols - 1) // cols) * (r[0].height + pad) for r in rows) + pad
    sheet = Image.new("L", (cols * (128 + pad) + pad, height), 96)
    y = pad
    for r in rows:
        for i, img in enumerate(r):
            sheet.paste(img, (pad + (i % cols) * (128 + pad), y + (i // cols) * (img.height + pad)))
        y += ((len(r) + cols - 1) // cols) * (r[0].height + pad)
    return sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST)


def test_the_docs_picture_is_made_of_the_golden_frames():
    sheet = compose_picture()
    if UPDATE:
        PICTURE.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(PICTURE)
    assert PICTURE.is_file(), "run with VRMBOX_UPDATE_GOLDEN=1 to draw docs/img/ui-screens.png"
    assert ImageChops.difference(Image.open(PICTURE).convert("L"), sheet).getbbox() is None
