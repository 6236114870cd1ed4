"""The CLI against bad input: vendor text that would take over the person's terminal, a config
with a typo, read-only commands without a box, files nested to crash a parser."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.textsafe import REPLACEMENT, printable
from intake_box import Box
from vendor_messages import TestVendor
from vrm_protocol import topics

ROOT = Path(__file__).resolve().parent.parent


def vrmbox(*args: str, config: Path | str = os.devnull, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vrmbox", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "VRMBOX_CONFIG": str(config), **env})


def test_printable_neutralises_what_a_terminal_would_obey():
    hostile = "Acme\x1b[2J\x1b]0;pwned\x07\x00\u202egpj.exe\u2066x\u2069\x9b31m\nnext\ttab"
    out = printable(hostile)
    assert not any(c in out for c in "\x1b\x07\x00\u202e\u2066\u2069\x9b\n\t")
    assert out.startswith("Acme" + REPLACEMENT) and "next tab" in out
    assert printable("x" * 2000, 40) == "x" * 39 + "…"
    assert printable("Zoë 自転車 🚲‍") == "Zoë 自転車 🚲‍"            # real text stays as it is
    assert printable("\ud800") == REPLACEMENT                         # a lone surrogate


def test_offers_shows_a_hostile_vendor_name_and_item_harmlessly(tmp_path):
    data = tmp_path / "box"
    box = Box(data)
    intent_id = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = TestVendor("acme")
    box.feed(topics.vendor_profile("acme"), v.profile())
    box.feed(topics.offers(intent_id), v.offer(box.store.get_intent(intent_id).token,
                                               name="\x1b[2J\x1b[31mFREE\u202e\x00 bike", currency="EUR"))
    assert box.store.list_offers(intent_id)
    box.store.close()
    r = vrmbox("offers", "--data-dir", str(data))
    assert r.returncode == 0 and "FREE" in r.stdout, r.stderr
    assert not any(c in r.stdout for c in "\x1b\u202e\x00")
    js = vrmbox("offers", "--json", "--data-dir", str(data))
    assert "\x1b" not in js.stdout and json.loads(js.stdout)[0]["item"].startswith("\x1b[2J")  # escaped, kept


def test_a_config_typo_stops_every_command_and_no_empty_box_is_made(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[intake]\nmax_quue = 5\n")
    home = tmp_path / "home"
    for args in (["profile", "show"], ["export", str(tmp_path / "out.json")], ["offers"], ["status"],
                 ["audit", "verify"], ["rules", "show"]):
        r = vrmbox(*args, config=bad, HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"))
        assert r.returncode != 0, args
        assert "intake.max_quue" in r.stderr and "unknown key" in r.stderr, (args, r.stderr)
    assert not home.exists() and not (tmp_path / "out.json").exists()
    r = vrmbox("profile", "show", "--config", str(bad), "--data-dir", str(tmp_path / "x"))
    assert r.returncode != 0 and "unknown key" in r.stderr                     # --config everywhere


def test_read_only_commands_need_an_existing_box(tmp_path):
    nothing = tmp_path / "nothing"
    for args in (["profile", "show"], ["export", str(tmp_path / "e.json")], ["audit", "verify"],
                 ["offers"], ["agreements"], ["stuff", "list"]):
        r = vrmbox(*args, "--data-dir", str(nothing))
        assert r.returncode == 1 and "no box data" in r.stderr, (args, r.stderr)
    assert not nothing.exists()


@pytest.mark.parametrize("name,text,expect", [
    ("deep.json", '{"version": 1, "filters": ' + '{"a": ' * 30_000 + "1" + "}" * 30_000 + "}", "nested too deeply"),
    ("huge.json", '{"version": 1, "filters": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}", "larger than 262144 bytes"),
    # a depth limit (32, checked without recursion) comes before the keys
    ("deep500.json", '{"version": 1, "filters": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}",
     "nested deeper than 32"),
    ("deep_value.json", '{"filters":{"attributes":[{"path":"price","op":"eq","value":'
     + "[" * 500 + "0" + "]" * 500 + "}]}}", "nested deeper than 32"),
    ("deep_value989.json", '{"filters":{"attributes":[{"path":"price","op":"eq","value":'
     + "[" * 989 + "0" + "]" * 989 + "}]}}", "nested"),   # the CLI's own parser: "nested too deeply"
    ("dup.json", '{"version": 1, "version": 1}', "appears twice"),
])
def test_hostile_rules_files_give_one_clear_message(tmp_path, name, text, expect):
    path = tmp_path / name
    path.write_text(text)
    r = vrmbox("rules", "set", str(path), "--data-dir", str(tmp_path / "box"))
    assert r.returncode == 1 and expect in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_rules_file_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"version": 1, "x": "\xed\xa0\x80"}')                 # an encoded lone surrogate
    r = vrmbox("rules", "set", str(path), "--data-dir", str(tmp_path / "box"))
    assert r.returncode == 1 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_config_nested_5000_deep_is_refused_cleanly(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    for args in (["status"], ["rules", "show"], ["run"]):
        r = vrmbox(*args, config=deep)
        assert r.returncode != 0 and "nested too deeply" in r.stderr and "Traceback" not in r.stderr, args


@pytest.mark.parametrize("flag", ["--limit", "--offset"])
@pytest.mark.parametrize("value", [str(10**30), "-1", "1e3", "many"])
def test_audit_show_refuses_a_number_out_of_range_clearly(tmp_path, flag, value):
    """`audit show --limit 10**30` must not be an OverflowError traceback."""
    data = tmp_path / "box"
    Box(data).store.close()
    r = vrmbox("audit", "show", flag, value, "--data-dir", str(data))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"argument {flag}: must be a whole number from 0 to 1000000000" in r.stderr, r.stderr
    ok = vrmbox("audit", "show", flag, "1000000000", "--data-dir", str(data))
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr
