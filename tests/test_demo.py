"""`vrmbox demo` as the person runs it: a subprocess that starts a broker, the box, three vendors
and a forger; its JSON summary comes from the box; no process it started outlives it, whether it
stops by time, by SIGTERM, or is SIGKILLed. Plus the demo's pure parts and the forger's attacks."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from demo.mischief import EXPECTED_REASON, Plan
from demo.output import Tally, event_line, panel_bytes, panel_top, summarise
from demo.run import intent_argv, ui_display
from demo.scene import DemoError, DemoFolder, DemoIntent, box_config_text, load_scene, parse_scene
from vrm_protocol import (Identity, Item, Offer, ProtocolError, ReplayGuard, TermsResponse, read_header,
                          sign, topics, verify)

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ process bookkeeping via /proc
def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, session, starttime, state) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()   # after "pid (comm) "
    return int(fields[1]), int(fields[3]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


class Watcher:
    """Samples the demo's descendants (parent chain leads to it) while it runs."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[tuple[int, int], tuple[int, str]] = {}   # (pid, starttime) -> (session, cmdline)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.is_set():
            parents = {}
            for pid in _pids():
                st = _stat(pid)
                if st:
                    parents[pid] = st
            tree, frontier = set(), {self.root}
            while frontier:
                kids = {p for p, st in parents.items() if st[0] in frontier and p not in tree}
                tree |= kids
                frontier = kids
            for pid in tree:
                st = parents[pid]
                cmd = _cmdline(pid)   # read again each time: a fork shows its parent's until exec
                if cmd:
                    self.seen[(pid, st[2])] = (st[1], cmd)
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)

    def commands(self) -> list[str]:
        return [cmd for _, cmd in self.seen.values()]

    def leftovers(self) -> list[str]:
        """Descendants still running (same pid and start time, not a zombie), and any live
        process in a session one of them led."""
        own_session = os.getsid(0)
        sessions = {sid for sid, _ in self.seen.values() if sid != own_session}
        left = []
        for (pid, start), (_, cmd) in self.seen.items():
            st = _stat(pid)
            if st and st[2] == start and st[3] != "Z":
                left.append(f"{pid} {cmd}")
        for pid in _pids():
            st = _stat(pid)
            if st and st[1] in sessions and st[3] != "Z" and not any(pid == p for p, _ in self.seen):
                left.append(f"{pid} {_cmdline(pid)} (session {st[1]})")
        return left

    def kill_leftovers(self) -> None:
        for (pid, start), _ in self.seen.items():
            st = _stat(pid)
            if st and st[2] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("VRMBOX_DATA_DIR", None)
    env.pop("VRMBOX_CONFIG", None)
    return env


class Running:
    """`vrmbox demo ...` as a subprocess; stderr lines collected as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "vrmbox", "demo", *args], cwd=ROOT, env=_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.watch = Watcher(self.proc.pid)
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(f, into), daemon=True)
                         for f, into in ((self.proc.stderr, self.err), (self.proc.stdout, self.out))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for_stderr(self, pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred("".join(self.err)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("demo did not get there; stderr:\n" + "".join(self.err)[-4000:])

    def finish(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.watch.stop()
            self.watch.kill_leftovers()
            raise AssertionError("demo did not stop; stderr:\n" + "".join(self.err)[-4000:])
        for t in self._readers:
            t.join(5)
        self.watch.stop()
        out = "".join(self.out)
        try:
            return json.loads(out)        # exactly one JSON object: anything else fails here
        except ValueError:
            raise AssertionError(f"stdout is not one JSON object: {out!r}\nstderr:\n" + "".join(self.err)[-4000:])

    def assert_nothing_left(self) -> None:
        cmds = self.watch.commands()
        # the collection saw the real parts (else "nothing left" would prove nothing)
        assert any("mosquitto" in c for c in cmds), cmds
        assert any("vrmbox -v run" in c for c in cmds), cmds
        assert sum("vendor_kit.cli run" in c for c in cmds) == 3, cmds
        assert any("demo.mischief" in c for c in cmds), cmds
        left = self.watch.leftovers()
        if left:
            self.watch.kill_leftovers()
        assert left == [], left


def _box(data_dir: Path, *args: str) -> list:
    env = _env()
    env["VRMBOX_DATA_DIR"] = str(data_dir)
    env["VRMBOX_CONFIG"] = os.devnull
    p = subprocess.run([sys.executable, "-m", "vrmbox", *args, "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_for_seconds_json_summary_from_the_box(tmp_path):
    keep = tmp_path / "demo"
    run = Running("--for", "10", "--json", "--data-dir", str(keep))
    summary = run.finish(timeout=180)
    assert summary["ok"] is True, summary
    assert summary["stopped_by"] == "time"
    assert summary["offers_ranked"] > 0
    assert summary["rejected"].get("bad_signature", 0) > 0
    assert summary["rejected"].get("replay", 0) > 0
    assert isinstance(summary["agreements"], int) and summary["agreements"] == 0
    run.assert_nothing_left()
    # The figures are the box's own: read the kept store again after the demo ended.
    box = keep / "box"
    assert summary["offers_ranked"] == len(_box(box, "offers"))
    counted: dict[str, int] = {}
    for r in _box(box, "rejections"):
        counted[r["reason"]] = counted.get(r["reason"], 0) + r["count"]
    assert summary["rejected"] == counted
    # what failed verification is never counted against the vendor it claims to be (protocol v2)
    by_vendor = {(r["reason"], r["vendor"]) for r in summary["rejected_by_vendor"]}
    assert ("replay", None) in by_vendor and ("bad_signature", None) in by_vendor
    assert {v for reason, v in by_vendor if reason in ("bad_signature", "replay")} == {None}
    # human text went to stderr, the JSON alone to stdout
    assert "vrmbox demo: everything lives in" in "".join(run.err)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_sigterm_stops_everything_and_still_prints_the_summary():
    run = Running("--for", "600", "--json")
    run.wait_for_stderr(lambda err: "REFUSED  replay" in err and "REFUSED  bad_signature" in err
                        and "#1 for" in err, timeout=150)
    run.proc.send_signal(signal.SIGTERM)
    summary = run.finish(timeout=90)
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["ok"] is True, summary
    assert summary["offers_ranked"] > 0
    assert summary["rejected"]["bad_signature"] > 0 and summary["rejected"]["replay"] > 0
    assert summary["kept"] is False and not Path(summary["data_dir"]).exists()
    run.assert_nothing_left()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_killed_takes_its_children_along():
    """SIGKILL leaves the demo no chance to clean up: its guard process does, and removes the
    temporary folder."""
    run = Running("--for", "600", "--json")
    run.wait_for_stderr(lambda err: "Stops after" in err, timeout=150)
    folder = Path(re.search(r"everything lives in (\S+)", "".join(run.err)).group(1))
    assert folder.is_dir()
    run.proc.kill()
    run.proc.wait(30)
    deadline = time.monotonic() + 60
    while (run.watch.leftovers() or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    run.watch.stop()
    run.assert_nothing_left()
    assert not folder.exists()


# ------------------------------------------------------------------ pure parts
def test_the_shipped_scene_loads_with_three_vendors_and_one_forger():
    scene = load_scene()
    assert len(scene.vendors) == 3 and scene.mischief is not None
    assert len(scene.intents) == 2
    cats = {i.category for i in scene.intents}
    for v in scene.vendors:
        assert set(v.categories) & cats, v   # every vendor can answer some intent


@pytest.mark.parametrize("raw, message", [
    ({"vendors": [], "intents": []}, "non-empty list"),
    ({"vendors": [{"slug": "a", "name": "A", "catalogue": "acme.yaml", "colour": "red"}], "intents": []},
     "unknown key(s) colour"),
    ({"vendors": [{"slug": "a", "name": "A", "catalogue": "nope.yaml"}], "intents": []}, "nope.yaml"),
    ({"vendors": [{"slug": "a", "name": "A", "catalogue": "acme.yaml"}], "intents": [{"attributes": {}}]},
     "missing category"),
    ({"vendors": [{"slug": "a", "name": "A", "catalogue": "acme.yaml"}] * 2, "intents": []}, "unique"),
    ({"vendors": [{"slug": "a", "name": "A", "catalogue": "acme.yaml"}], "intents": [], "intent_ttl_s": -5},
     "positive"),
])
def test_a_bad_scene_is_refused_with_what_is_wrong(raw, message):
    with pytest.raises(DemoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_scene(raw, ROOT / "examples" / "demo")


def test_summary_counts_what_the_box_answered():
    ranked = [{"vendor": "a", "item": "x", "price": 1, "currency": "EUR", "score": 1.0, "intent": "i",
               "eligible": True}]
    every = ranked + [{"vendor": "b", "eligible": False}]
    rejections = [{"reason": "bad_signature", "vendor": "a", "count": 3},
                  {"reason": "bad_signature", "vendor": "b", "count": 2},
                  {"reason": "replay", "vendor": "c", "count": 1}]
    agreements = [{"status": "active"}, {"status": "pending_confirmation"}, {"status": "active"}]
    s = summarise(ranked, every, rejections, agreements)
    assert s["offers_ranked"] == 1 and s["offers_received"] == 2 and s["offers_filtered_out"] == 1
    assert s["rejected"] == {"bad_signature": 5, "replay": 1}
    assert s["agreements"] == 3 and s["agreements_by_status"] == {"active": 2, "pending_confirmation": 1}


def test_running_line_tallies_events_and_skips_noise():
    t = Tally()
    assert event_line({"type": "changed", "op": "intent_add"}, t) is None
    line = event_line({"type": "offer", "vendor": "acme", "item": "Bike", "price": 5, "currency": "EUR",
                       "eligible": True, "position": 1, "category": "bikes"}, t)
    assert "acme: Bike 5 EUR  #1 for bikes" in line
    line = event_line({"type": "rejected", "reason": "replay", "vendor": "trailhead"}, t)
    assert line.startswith("REFUSED  replay")
    assert t.line() == "[offers 1 | rejected 1 (replay 1) | agreements 0]"


def test_display_falls_back_to_frames_without_a_terminal():
    assert ui_display(stdout_is_tty=True, as_json=False) == "asciiblock"
    assert ui_display(stdout_is_tty=False, as_json=False) == "capture"
    assert ui_display(stdout_is_tty=True, as_json=True) == "capture"
    assert panel_top(80, 50) == 22                     # 80 columns: a 20-row picture
    assert panel_top(80, 25) is None                   # no room for our lines: frames instead
    out = panel_bytes(22, ["a", "b"], 80)
    assert out.startswith(b"\x1b7") and out.endswith(b"\x1b8") and b"\x1b[23;1H\x1b[2Kb" in out


def test_config_and_intent_commands(tmp_path):
    layout = DemoFolder(tmp_path / 'we"ird', tmp_path / "frames")
    cfg = tomllib.loads(box_config_text(layout, "mqtt://127.0.0.1:1234"))
    assert cfg == {"data_dir": str(layout.box), "broker": {"url": "mqtt://127.0.0.1:1234"}}
    argv = intent_argv(DemoIntent("bikes", {"budget_max": 800, "postcode_district": "SW1A", "e": True}, "d"), 60)
    assert argv[argv.index("--attr"):] == ["--attr", "budget_max=800", "--attr", "postcode_district=SW1A",
                                           "--attr", "e=true", "--description", "d", "--ttl", "60"]


# ------------------------------------------------------------------ the forger's attacks
def _offer(identity: Identity, vendor: str, now: float) -> str:
    body = Offer(intent="intent-0001", vendor=vendor, item=Item(name="Bike"), price=100.0, currency="EUR",
                 valid_until=int(now) + 3600,
                 terms_response=TermsResponse(id="vrm-basic-1", sha256="A" * 43, decision="accept"))
    return sign(identity, body, now=now, ttl=3600)


def test_forger_answers_each_genuine_offer_once_with_attacks_the_box_refuses():
    now = time.time()
    own, victim = Identity.generate(), Identity.generate()
    plan = Plan(own)
    guard = ReplayGuard()                                     # what the box remembers
    theirs, mine = _offer(victim, "acme", now), _offer(own, "trailhead", now)
    topic = topics.offers("intent-0001")
    attacks = []
    for token in (theirs, mine):
        verify(token, now=now, replay=guard)                  # the box accepted the genuine ones
        attacks += plan.react(topic, token.encode(), now)
    assert sorted(a.kind for a in attacks) == ["impersonation", "replay", "tampered"]
    for a in attacks:
        assert a.topic == topic
        with pytest.raises(ProtocolError) as exc:
            verify(a.token, now=now, replay=guard)
        assert exc.value.reason == EXPECTED_REASON[a.kind], a.kind
    imp = next(a for a in attacks if a.kind == "impersonation")
    assert read_header(imp.token)[1]["kid"].startswith(victim.did)   # it claims to be the victim
    # neither the same offer again nor the forger's own messages start another round
    for token in [theirs, mine] + [a.token for a in attacks]:
        assert plan.react(topic, token.encode(), now) == []
    assert plan.react(topics.countersignatures("intent-0001"), theirs.encode(), now) == []


def test_forger_stops_at_its_limit():
    now = time.time()
    plan = Plan(Identity.generate(), limit=1)
    victim = Identity.generate()
    sent = []
    for _ in range(3):
        sent += plan.react(topics.offers("intent-0001"), _offer(victim, "acme", now).encode(), now)
    assert sorted(a.kind for a in sent) == ["impersonation", "tampered"]


def test_guard_reads_groups_by_tier_and_ignores_junk():
    from demo.guard import parse
    tiers, done, remove = parse(["2 100\n", "0 200\n", "0 201\n", "1 300\n", "0 1\n", "x y\n",
                                 "remove /tmp/vrmbox-demo-x\n", "remove relative\n"])
    assert tiers == {0: [200, 201], 1: [300], 2: [100]} and done is False
    assert remove == ["/tmp/vrmbox-demo-x"]
    assert parse(["0 200\n", "done\n"])[1] is True
