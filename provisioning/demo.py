"""`vrmbox demo`: the whole system on one machine, in one command (docs/demo.md).

Why a separate orchestrator rather than a shell script: it must start a private broker, the
box, three vendors, a forger and (when they exist) the display and the phone app in the right
order; read the box's own figures at the end; and leave no process behind whatever stops it
(time, Ctrl-C, SIGTERM, its own SIGKILL). Every child runs in its own session (its own process
group), is stopped tier by tier (front ends and vendors, the daemon, the broker) and waited for;
on Linux each child also gets `PR_SET_PDEATHSIG`, so even a SIGKILLed demo takes them along.

The scene (vendors, catalogues, profile, intents) is data: examples/demo/scene.yaml. The pure
parts (scene, layout, summary, the running line) are functions; `Demo` is the shell.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from device.textsafe import for_terminal as shown
from device.textsafe import json_for_terminal
from provisioning.launch import ROOT, Broker, Proc, free_port, python_module
from vendor_kit.catalogue import Catalogue, CatalogueError

log = logging.getLogger(__name__)

SCENE_FILE = ROOT / "examples" / "demo" / "scene.yaml"
READY = "READY"
START_TIMEOUT_S = 30.0          # per child, to print READY (a loaded 2-core machine is slow)
STOP_TIMEOUT_S = 15.0           # per tier, after SIGTERM, before SIGKILL
CLI_TIMEOUT_S = 60.0
PORT_TIMEOUT_S = 20.0           # the companion app's port must accept connections by then
PR_SET_PDEATHSIG = 1            # <linux/prctl.h>
# Stop order, for the demo itself and for its guard: front ends, vendors and the forger; the
# daemon; the broker.
TIER_FRONT, TIER_DAEMON, TIER_BROKER = 0, 1, 2
OPTIONAL_PARTS = ("ui", "companion")   # the demo goes on without them


class DemoError(Exception):
    """The demo cannot go on; the message says what failed and where its log is."""


class Interrupted(Exception):
    """SIGINT/SIGTERM during start-up: unwind and stop what already runs."""


# ============================================================================ pure: the scene
@dataclass(frozen=True)
class DemoVendor:
    slug: str
    name: str
    catalogue: Path
    categories: tuple[str, ...]
    url: str | None = None
    mischief: bool = False


@dataclass(frozen=True)
class DemoIntent:
    category: str
    attributes: dict[str, Any] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class Scene:
    profile: dict[str, str]
    vendors: tuple[DemoVendor, ...]
    intents: tuple[DemoIntent, ...]
    intent_ttl_s: int | None = None

    @property
    def mischief(self) -> DemoVendor | None:
        return next((v for v in self.vendors if v.mischief), None)


def _keys(obj: Any, where: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DemoError(f"{where}: must be a mapping")
    required, allowed = tuple(required), set(required) | set(optional)
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise DemoError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise DemoError(f"{where}: missing {', '.join(missing)}")
    return obj


def parse_scene(raw: Any, base: Path) -> Scene:
    """Check the scene file's content; catalogue paths are relative to `base`."""
    top = _keys(raw, "scene", ("vendors", "intents"), ("profile", "intent_ttl_s"))
    profile = top.get("profile") or {}
    if not isinstance(profile, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in profile.items()):
        raise DemoError("scene.profile: must map field names to text")
    vendors = []
    if not isinstance(top["vendors"], list) or not top["vendors"]:
        raise DemoError("scene.vendors: must be a non-empty list")
    for i, v in enumerate(top["vendors"]):
        v = _keys(v, f"scene.vendors[{i}]", ("slug", "name", "catalogue"), ("url", "mischief"))
        path = (base / str(v["catalogue"])).resolve()
        try:
            cat = Catalogue.load(path)
        except (CatalogueError, OSError) as exc:
            raise DemoError(f"scene.vendors[{i}] ({v['slug']}): catalogue {path}: {exc}") from exc
        categories = tuple(sorted({item.category for item in cat.items}))
        vendors.append(DemoVendor(str(v["slug"]), str(v["name"]), path, categories, v.get("url"),
                                  bool(v.get("mischief", False))))
    if len({v.slug for v in vendors}) != len(vendors):
        raise DemoError("scene.vendors: slugs must be unique")
    if sum(v.mischief for v in vendors) > 1:
        raise DemoError("scene.vendors: at most one vendor has mischief: true")
    intents = []
    if not isinstance(top["intents"], list):
        raise DemoError("scene.intents: must be a list")
    for i, it in enumerate(top["intents"]):
        it = _keys(it, f"scene.intents[{i}]", ("category",), ("attributes", "description"))
        attrs = it.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise DemoError(f"scene.intents[{i}].attributes: must be a mapping")
        intents.append(DemoIntent(str(it["category"]), dict(attrs), it.get("description")))
    ttl = top.get("intent_ttl_s")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
        raise DemoError("scene.intent_ttl_s: must be a positive number of seconds")
    return Scene(dict(profile), tuple(vendors), tuple(intents), ttl)


def load_scene(path: Path = SCENE_FILE) -> Scene:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f"cannot read the demo scene {path}: {exc}") from exc
    return parse_scene(raw, path.parent)


# ============================================================================ pure: where things go
@dataclass(frozen=True)
class Layout:
    """The demo's folder: everything it writes is under `root`."""

    root: Path
    frames: Path

    @property
    def box(self) -> Path:
        return self.root / "box"

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "vrmbox.toml"

    def vendor(self, slug: str) -> Path:
        return self.root / "vendors" / slug

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def box_config_text(layout: Layout, broker_url: str) -> str:
    """The box's config for this demo run; `vrmbox` in another terminal reads it via $VRMBOX_CONFIG."""
    return (f"# Written by `vrmbox demo` for this run only (see docs/demo.md).\n"
            f"data_dir = {_toml_str(str(layout.box))}\n\n"
            f"[broker]\nurl = {_toml_str(broker_url)}\n")


def vrmbox_argv(*args: str) -> list[str]:
    return python_module("device.cli", *args)


def vendor_argv(*args: str) -> list[str]:
    return python_module("vendor_kit.cli", *args)


def intent_argv(intent: DemoIntent, ttl: int | None) -> list[str]:
    argv = vrmbox_argv("intent", "add", intent.category, "--json")
    for k, v in intent.attributes.items():
        argv += ["--attr", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
    if intent.description:
        argv += ["--description", intent.description]
    if ttl:
        argv += ["--ttl", str(ttl)]
    return argv


def ui_display(stdout_is_tty: bool, as_json: bool) -> str:
    """luma's terminal emulators need a tty (asciiblock fails with "Inappropriate ioctl for
    device" without one); otherwise the display goes to PNG frames."""
    return "asciiblock" if stdout_is_tty and not as_json else "capture"


# ============================================================================ pure: the figures
def summarise(ranked: list[dict[str, Any]], every: list[dict[str, Any]], rejections: list[dict[str, Any]],
              agreements: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary from the box's own answers (`vrmbox offers|rejections|agreements --json`)."""
    rejected: dict[str, int] = {}
    for r in rejections:
        rejected[r["reason"]] = rejected.get(r["reason"], 0) + int(r["count"])
    by_status: dict[str, int] = {}
    for a in agreements:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    return {
        "offers_ranked": len(ranked),
        "offers_received": len(every),
        "offers_filtered_out": sum(1 for o in every if not o.get("eligible")),
        "rejected": dict(sorted(rejected.items())),
        "rejected_by_vendor": [{"reason": r["reason"], "vendor": r["vendor"], "count": r["count"]}
                               for r in rejections],
        "agreements": len(agreements),
        "agreements_by_status": dict(sorted(by_status.items())),
        "top_offers": [{k: o.get(k) for k in ("vendor", "item", "price", "currency", "score", "intent")}
                       for o in ranked[:5]],
    }


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"vrmbox demo: stopped ({s.get('stopped_by')}) after {s.get('ran_s', 0):.0f} s",
             f"  offers ranked     {s.get('offers_ranked', '?')}  (received {s.get('offers_received', '?')}, "
             f"filtered out by your rules {s.get('offers_filtered_out', '?')})"]
    for o in s.get("top_offers", [])[:3]:   # vendor text: escapes for bidi and control characters
        lines.append(f"      {shown(o['vendor'])}: {shown(o['item'])} {shown(o['price'])} "
                     f"{shown(o['currency'])}  score {o['score']:.3f}")
    rejected = s.get("rejected", {})
    lines.append("  rejected          " + (", ".join(f"{k} {v}" for k, v in rejected.items()) or "none"))
    lines.append(f"  agreements        {s.get('agreements', '?')}"
                 + (f"  ({', '.join(f'{k} {v}' for k, v in s.get('agreements_by_status', {}).items())})"
                    if s.get("agreements") else ""))
    for w in s.get("warnings", []):
        lines.append(f"  warning: {w}")
    for e in s.get("errors", []):
        lines.append(f"  error: {e}")
    if s.get("kept"):
        lines.append(f"  data kept in {s['data_dir']}")
    return "\n".join(lines)


@dataclass
class Tally:
    """What the running line shows (the summary is read from the box, not from this)."""

    offers: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    agreements: int = 0

    def line(self) -> str:
        rej = sum(self.rejected.values())
        detail = f" ({', '.join(f'{k} {v}' for k, v in sorted(self.rejected.items()))})" if rej else ""
        return f"[offers {self.offers} | rejected {rej}{detail} | agreements {self.agreements}]"


def event_line(event: dict[str, Any], tally: Tally) -> str | None:
    """Update the tally with one daemon event; the text to show, or None for events not shown.
    Every value from the event is vendor text, shown through device.textsafe.for_terminal
    (bidi and control characters as <U+202E> escapes, one line)."""
    kind = event.get("type")
    v = {k: shown(event.get(k)) for k in ("vendor", "item", "price", "currency", "category", "reason")}
    if kind == "offer":
        tally.offers += 1
        where = (f"#{shown(event['position'])} for {v['category']}" if event.get("eligible")
                 else f"filtered out ({v['category']})")
        text = f"offer    {v['vendor']}: {v['item']} {v['price']} {v['currency']}  {where}"
    elif kind == "rejected":
        reason = str(event.get("reason"))
        tally.rejected[reason] = tally.rejected.get(reason, 0) + 1
        text = f"REFUSED  {v['reason']}" + (f" (in the name of {v['vendor']})" if event.get("vendor") else "")
    elif kind == "agreement_active":
        tally.agreements += 1
        text = f"agreement with {v['vendor']} is active: data sent encrypted to that vendor only"
    elif kind in ("vendor_new", "vendor_key_changed"):
        text = f"vendor   {v['vendor']} " + ("introduced itself (key pinned)" if kind == "vendor_new"
                                            else "published a NEW key: flagged, not accepted")
    elif kind == "revocation_acknowledged":
        text = f"revoked  {v['vendor']} confirmed deletion"
    else:
        return None
    return text


# ============================================================================ pure: terminal panel
def panel_top(cols: int, rows: int, width: int = 128, height: int = 64, scale: int = 2) -> int | None:
    """First terminal row free below luma's asciiblock picture (it scales the display, doubled
    by scale2x, to the terminal's width, two pixels per row), or None if fewer than 6 rows remain."""
    art_rows = (height * scale * cols // (width * scale)) // 2
    top = art_rows + 2
    return top if rows - top >= 6 else None


def panel_bytes(top: int, lines: Iterable[str], cols: int) -> bytes:
    """Redraw our lines below the picture in one write that saves and restores the cursor, so
    the UI process drawing at the top is not disturbed."""
    out = ["\x1b7"]
    for i, line in enumerate(lines):
        out.append(f"\x1b[{top + i};1H\x1b[2K{line[:cols - 1]}")
    out.append("\x1b8")
    return "".join(out).encode("utf-8", "replace")


# ============================================================================ shell
def _pdeathsig() -> None:
    """In the child before exec: die with the demo (Linux). Linux clears it when a process
    changes credentials, hence also the guard (provisioning/demo_guard.py)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child_kwargs() -> dict[str, Any]:
    kw: dict[str, Any] = {"start_new_session": True}
    if sys.platform.startswith("linux"):
        kw["preexec_fn"] = _pdeathsig
    return kw


def _exited(pid: int) -> bool:
    """Has this child exited? Does not reap it: while unreaped its pid (and process group id)
    cannot be reused, so signalling the group afterwards is safe."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_tier(popens: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM each child's whole process group, wait, SIGKILL what is left of the group, reap."""
    live = [p for p in popens if p is not None and p.returncode is None]
    for p in live:
        _killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_exited(p.pid) for p in live):
        time.sleep(0.05)
    for p in live:
        if not _exited(p.pid):
            log.warning("%s did not stop within %.0f s: killed", p.args[:4] if isinstance(p.args, list) else p.args,
                        timeout)
        _killpg(p.pid, signal.SIGKILL)    # the leader, and anything it started in its group
        p.wait()


def available_commands() -> set[str]:
    """The `vrmbox` subcommands that exist in this tree (the UI and the phone app may not yet)."""
    from device.cli import build_parser
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


class Output:
    """Human text: to stderr (stdout carries only the summary, or the JSON object with --json).
    With the UI drawing in the terminal, the lines go to a panel below its picture: a few
    pinned lines (how to reach the box), then the latest events."""

    def __init__(self, panel: int | None = None) -> None:
        self.panel = panel
        self.pinned: list[str] = []
        self.status = ""
        self.lines: deque[str] = deque(maxlen=1)
        self.cols, self.rows = shutil.get_terminal_size()

    def pin(self, lines: list[str]) -> None:
        if self.panel is None:
            self.say("\n".join(lines))
            return
        self.pinned = lines
        self.lines = deque(maxlen=max(1, self.rows - self.panel - len(lines)))   # one row: the status
        self._draw()

    def event(self, text: str, status: str) -> None:
        """One event; `status` (the running tally) follows it, or has a row of its own in the panel."""
        if self.panel is None:
            self.say(f"{text:<64} {status}")
            return
        self.status = status
        self.say(text)

    def say(self, text: str = "") -> None:
        if self.panel is None:
            print(text, file=sys.stderr, flush=True)
            return
        self.lines.extend(text.split("\n"))
        self._draw()

    def _draw(self) -> None:
        assert self.panel is not None
        os.write(sys.stdout.fileno(), panel_bytes(self.panel, [*self.pinned, self.status, *self.lines], self.cols))


class Demo:
    def __init__(self, args: argparse.Namespace, scene: Scene) -> None:
        self.args = args
        self.scene = scene
        self.keep = args.data_dir is not None
        root = Path(args.data_dir).resolve() if self.keep else Path(tempfile.mkdtemp(prefix="vrmbox-demo-"))
        self.layout = Layout(root, Path(args.frames).resolve() if args.frames else root / "frames")
        self.out = Output()
        self.broker: Broker | None = None
        self.procs: dict[str, Proc] = {}        # name -> child that prints READY, in start order
        self.guard: subprocess.Popen | None = None
        self._guard_lock = threading.Lock()
        self.fronts: list[tuple[str, subprocess.Popen, Any]] = []   # (name, popen, log file)
        self.events: queue.Queue = queue.Queue()
        self.parts: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.signals = 0
        self.starting = True
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.started_at = 0.0
        self._tty: Any = None

    # ------------------------------------------------------------ signals
    def on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
        if self.starting and self.signals == 1:
            raise Interrupted(self.stop_reason)

    # ------------------------------------------------------------ helpers
    def cli(self, argv: list[str], what: str) -> str:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=CLI_TIMEOUT_S)
        if p.returncode != 0:
            raise DemoError(f"{what} failed: {(p.stdout + p.stderr).strip()[-1500:]}")
        return p.stdout

    def cli_all(self, jobs: list[tuple[list[str], str]]) -> list[str]:
        """Run short commands side by side (each is a Python start-up: seconds on a Pi)."""
        procs: list[tuple[subprocess.Popen, str]] = []
        outs, failed = [], []
        try:
            for argv, what in jobs:
                procs.append((subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                               cwd=ROOT), what))
            for p, what in procs:
                try:
                    out, err = p.communicate(timeout=CLI_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, err = p.communicate()
                outs.append(out)
                if p.returncode != 0:
                    failed.append(f"{what} failed: {(out + err).strip()[-1500:]}")
        finally:   # interrupted: none of them outlives the demo
            for p, _ in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if failed:
            raise DemoError("; ".join(failed))
        return outs

    # ------------------------------------------------------------ the guard
    def start_guard(self) -> None:
        self.guard = subprocess.Popen(python_module("provisioning.demo_guard"), stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=open(self.layout.log("guard"), "ab"),
                                      cwd=ROOT, env=os.environ.copy(), start_new_session=True)
        if not self.keep:
            self._tell_guard(f"remove {self.layout.root}")

    def guard_child(self, tier: int, popen: subprocess.Popen) -> None:
        self._tell_guard(f"{tier} {popen.pid}")

    def _tell_guard(self, line: str) -> None:
        if self.guard is None or self.guard.stdin is None:
            return
        with self._guard_lock:
            try:
                self.guard.stdin.write(os.fsencode(line) + b"\n")
                self.guard.stdin.flush()
            except (BrokenPipeError, ValueError):
                log.warning("the demo's guard is gone; a SIGKILLed demo may leave processes behind")

    def guard_when_started(self, tier: int, proc: Proc) -> None:
        """Proc.start spawns and then waits for READY: register the child as soon as it exists."""
        def watch() -> None:
            deadline = time.monotonic() + START_TIMEOUT_S
            while proc.proc is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if proc.proc is not None:
                self.guard_child(tier, proc.proc)
        threading.Thread(target=watch, name="demo-guard-register", daemon=True).start()

    def stop_guard(self) -> None:
        """Everything is stopped: tell the guard, let it go."""
        if self.guard is None:
            return
        with self._guard_lock:
            try:
                assert self.guard.stdin
                self.guard.stdin.write(b"done\n")
                self.guard.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        try:
            self.guard.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.guard.kill()
            self.guard.wait()

    # ------------------------------------------------------------ start
    def prepare(self) -> None:
        L = self.layout
        for d in (L.root, L.box.parent, L.logs, L.root / "vendors"):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(L.root, 0o700)

    def start(self) -> None:
        L, scene = self.layout, self.scene
        self.prepare()
        self.start_guard()
        self.broker = Broker(L.broker)
        self.broker.start()
        assert self.broker.proc is not None
        self.guard_child(TIER_BROKER, self.broker.proc)
        L.config.write_text(box_config_text(L, self.broker.url))
        # Every child (and the person's `vrmbox` in another terminal) uses this run's config.
        os.environ["VRMBOX_CONFIG"] = str(L.config)
        os.environ["VRMBOX_DATA_DIR"] = str(L.box)
        py_path = os.environ.get("PYTHONPATH", "")
        if str(ROOT) not in py_path.split(os.pathsep):
            os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + py_path if py_path else "")
        self.parts["broker"] = self.broker.url

        jobs = [(vendor_argv("init", "--dir", str(L.vendor(v.slug)), "--vendor", v.slug, "--name", v.name,
                             "--categories", ",".join(v.categories), *(["--url", v.url] if v.url else [])),
                 f"vrm-vendor init {v.slug}")
                for v in scene.vendors if not (L.vendor(v.slug) / "vendor.json").exists()]
        fields = list(scene.profile.items())
        if fields:  # the first one creates the store and its keys: alone, before the rest
            jobs.insert(0, (vrmbox_argv("profile", "set", fields[0][0], fields[0][1]), "vrmbox profile set"))
        self.cli_all(jobs[:1])
        self.cli_all(jobs[1:] + [(vrmbox_argv("profile", "set", k, v), "vrmbox profile set")
                                 for k, v in fields[1:]])

        daemon = self._launch(vrmbox_argv("-v", "run", "--data-dir", str(L.box), "--broker", self.broker.url),
                              "daemon", TIER_DAEMON)
        self.parts["daemon"] = daemon.proc.pid
        self._subscribe()
        bad = scene.mischief
        if bad is not None:  # before the vendors, so it sees their first offers
            self._launch(python_module("provisioning.demo_mischief", "--dir", str(L.vendor(bad.slug)),
                                       "--broker", self.broker.url), "mischief")
            self.parts["mischief"] = bad.slug
        for v in scene.vendors:
            self._launch(vendor_argv("run", "--dir", str(L.vendor(v.slug)), "--broker", self.broker.url,
                                     "--catalogue", str(v.catalogue)), f"vendor-{v.slug}")
        self.parts["vendors"] = [v.slug for v in scene.vendors]
        self._fronts()
        outs = self.cli_all([(intent_argv(i, scene.intent_ttl_s), f"vrmbox intent add {i.category}")
                             for i in scene.intents])
        self.parts["intents"] = [json.loads(o).get("intent") for o in outs]

    def _launch(self, argv: list[str], name: str, tier: int = TIER_FRONT) -> Proc:
        """Start a child that prints READY; registered first, so a stop during start-up finds it."""
        proc = Proc(argv, self.layout.log(name), ready=READY)
        self.procs[name] = proc
        self.guard_when_started(tier, proc)
        try:
            proc.start(timeout=START_TIMEOUT_S)
        except RuntimeError as exc:
            raise DemoError(f"{name} did not start (log {self.layout.log(name)}):\n{exc}") from exc
        return proc

    def _subscribe(self) -> None:
        """The box's event stream through `vrmbox events` (the CLI: a stable interface, where
        importing the daemon's client module would tie the demo to its internals)."""
        logf = open(self.layout.log("events"), "ab")
        p = subprocess.Popen(vrmbox_argv("events"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=logf, cwd=ROOT, **_child_kwargs())
        self.fronts.append(("events", p, logf))
        self.guard_child(TIER_FRONT, p)

        def pump() -> None:
            assert p.stdout
            for line in p.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.events.put(event)
            self.events.put(None)
        threading.Thread(target=pump, name="demo-events", daemon=True).start()

    def _terminal_ui(self, argv: list[str]) -> subprocess.Popen:
        """The UI drawing in this terminal and reading its keys: stdin and stdout are the tty,
        so it cannot go through Proc (which reads READY from a pipe)."""
        logf = open(self.layout.log("ui"), "ab")
        try:
            import termios
            self._tty = termios.tcgetattr(sys.stdin.fileno())   # restored even if the UI is killed
        except (ImportError, OSError, ValueError):
            self._tty = None
        p = subprocess.Popen(argv, stdout=sys.stdout, stderr=logf, cwd=ROOT, **_child_kwargs())
        self.fronts.append(("ui", p, logf))
        self.guard_child(TIER_FRONT, p)
        return p

    def _optional(self, what: str, start: Callable[[], Any]) -> Any:
        """Start a part the demo can do without; a failure is a warning, not the end of the demo."""
        try:
            return start()
        except (DemoError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            self.warnings.append(f"{what}: {exc}")
            return None

    def _fronts(self) -> None:
        """The display and the phone app, when this tree has them (`vrmbox ui`, `vrmbox companion`)."""
        commands = available_commands()
        L = self.layout
        self.parts["display"] = self.parts["companion"] = None
        if "ui" in commands:
            display = ui_display(sys.stdout.isatty() and sys.stdin.isatty(), self.args.json)
            panel = panel_top(*shutil.get_terminal_size()) if display == "asciiblock" else None
            if display == "asciiblock" and panel is None:
                display = "capture"           # too small a terminal for the picture and our lines
            argv = vrmbox_argv("ui", "--display", display, "--data-dir", str(L.box))
            if display == "capture":
                L.frames.mkdir(parents=True, exist_ok=True)
                if self._optional("the display", lambda: self._launch(argv + ["--frames", str(L.frames)], "ui")):
                    self.parts["display"] = f"PNG frames in {L.frames}"
            elif self._optional("the display", lambda: self._terminal_ui(argv)):
                self.parts["display"] = "in this terminal (keys: see docs/demo.md)"
                self.out = Output(panel)
        if "companion" in commands:
            port = free_port()
            if self._optional("the phone app", lambda: self._launch(
                    vrmbox_argv("companion", "--bind", "127.0.0.1", "--port", str(port), "--data-dir", str(L.box)),
                    "companion")):
                self.parts["companion"] = f"http://127.0.0.1:{port}/"
                if "pair" in commands:
                    out = self._optional("pairing code", lambda: self.cli(
                        vrmbox_argv("pair", "--json", "--data-dir", str(L.box)), "vrmbox pair"))
                    if out:
                        self.parts["pairing_code"] = self._optional(
                            "pairing code", lambda: json.loads(out).get("code"))

    # ------------------------------------------------------------ run
    def banner(self, compact: bool = False) -> list[str]:
        L, p = self.layout, self.parts
        if compact:   # under the box's picture: only how to reach it
            phone = f"  phone {p['companion']} code {p.get('pairing_code')}" if p.get("companion") else ""
            return [f"vrmbox demo  broker {p['broker']}{phone}",
                    f"export VRMBOX_CONFIG={L.config} VRMBOX_DATA_DIR={L.box}; vrmbox offers",
                    "keys: arrows, Enter select, Esc back, hold Enter = long press.  Ctrl-C stops all.",
                    ""]
        vendors = ", ".join(f"{v.slug} ({v.name}: {'/'.join(v.categories)})" for v in self.scene.vendors)
        lines = [
            f"vrmbox demo: everything lives in {L.root}"
            + ("" if self.keep else " (removed at the end; --data-dir DIR keeps it)"),
            f"  broker     {p['broker']}  (private Mosquitto, the project's config, logs {L.log('broker')})",
            f"  box        pid {p['daemon']}, data {L.box}",
            f"  vendors    {vendors}",
        ]
        if p.get("mischief"):
            lines.append(f"  mischief   speaks as {p['mischief']}: forged and replayed offers the box must refuse")
        lines.append(f"  display    {p.get('display') or 'not built yet (no `vrmbox ui`)'}")
        if p.get("companion"):
            lines.append(f"  phone app  {p['companion']}  pairing code {p.get('pairing_code') or '(none)'}"
                         " (once, 5 minutes; a new one: vrmbox pair)")
        else:
            lines.append("  phone app  not built yet (no `vrmbox companion`)")
        lines += [f"  warning    {w}" for w in self.warnings]
        lines += [
            f"  intents    {', '.join(i.category for i in self.scene.intents)} cast",
            "Try it in another terminal:",
            f"  export VRMBOX_CONFIG={L.config} VRMBOX_DATA_DIR={L.box}",
            "  vrmbox offers                                   # ranked, with explanations",
            "  vrmbox offer accept --fields email -- OFFER_ID  # then: vrmbox agreement confirm -- AGREEMENT_ID",
            "  vrmbox rejections; vrmbox audit verify",
            ("Stops after %d s" % self.args.seconds if self.args.seconds else "Stop with Ctrl-C") + ".",
        ]
        return lines

    def run(self) -> None:
        """Print the running line until the time is up, a signal comes, or a part dies."""
        tally = Tally()
        self.started_at = time.monotonic()
        deadline = self.started_at + self.args.seconds if self.args.seconds else None
        required = [("broker", self.broker.proc)] + [(n, p.proc) for n, p in self.procs.items()
                                                     if n not in OPTIONAL_PARTS]
        while self.stop_reason is None:
            if deadline is not None and time.monotonic() >= deadline:
                self.stop_reason = "time"
                break
            dead = [name for name, p in required if _exited(p.pid)]
            if dead:
                self.stop_reason = "failure"
                self.errors.append(f"{', '.join(dead)} exited unexpectedly (logs in {self.layout.logs})")
                break
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is None:
                continue           # the daemon closed the stream; the check above notices why
            line = event_line(event, tally)
            if line:
                self.out.event(line, tally.line())

    # ------------------------------------------------------------ stop
    def _popens(self, names: Callable[[str], bool]) -> list[subprocess.Popen]:
        return [p.proc for n, p in self.procs.items() if names(n) and p.proc is not None]

    def stop(self) -> None:
        """Front ends, vendors and the forger, then the daemon; each tier waited for."""
        hurry = 1.0 if self.signals > 1 else STOP_TIMEOUT_S
        stop_tier([p for _, p, _ in self.fronts] + self._popens(lambda n: n != "daemon"), hurry)
        for _, _, logf in self.fronts:
            logf.close()
        if self._tty is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._tty)
        stop_tier(self._popens(lambda n: n == "daemon"), hurry)
        for proc in self.procs.values():
            proc.stop()       # already exited and reaped: this only tidies up
        if self.out.panel is not None:
            self.out = Output()

    def stop_broker(self) -> None:
        if self.broker is not None and self.broker.proc is not None:
            stop_tier([self.broker.proc], STOP_TIMEOUT_S)
            self.broker.stop()

    def figures(self) -> dict[str, Any]:
        """Read from the box itself, after its daemon stopped (every count is then on disk)."""
        if not (self.layout.box / "keys").exists():
            return {}
        outs = self.cli_all([(vrmbox_argv("offers", "--json"), "vrmbox offers"),
                             (vrmbox_argv("offers", "--all", "--json"), "vrmbox offers --all"),
                             (vrmbox_argv("rejections", "--json"), "vrmbox rejections"),
                             (vrmbox_argv("agreements", "--json"), "vrmbox agreements")])
        return summarise(*(json.loads(o) for o in outs))

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.layout.root, ignore_errors=True)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        scene = load_scene(Path(args.scene) if args.scene else SCENE_FILE)
    except DemoError as exc:
        return _emit(args, {"ok": False, "error": str(exc)}, None)
    demo = Demo(args, scene)
    old = {s: signal.signal(s, demo.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    summary: dict[str, Any] = {"ok": True}
    try:
        try:
            demo.start()
            demo.starting = False
            demo.out.pin(demo.banner(compact=demo.out.panel is not None))
            if demo.stop_reason is None:
                demo.run()
        except Interrupted:
            pass
        except (DemoError, OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            demo.errors.append(str(exc))
            demo.stop_reason = demo.stop_reason or "failure"
        except Exception as exc:  # a bug must still stop every child and print the summary
            log.exception("vrmbox demo failed")
            demo.errors.append(f"{type(exc).__name__}: {exc}")
            demo.stop_reason = demo.stop_reason or "failure"
        finally:
            demo.starting = False
            ran = time.monotonic() - demo.started_at if demo.started_at else 0.0
            demo.out.say(f"vrmbox demo: stopping ({demo.stop_reason or 'time'}): vendors, the box, the broker")
            demo.stop()
        try:
            summary.update(demo.figures())
        except (DemoError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            demo.errors.append(f"could not read the box's figures: {exc}")
        demo.stop_broker()
        demo.stop_guard()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for proc in demo.procs.values():
            if proc.proc is not None and proc.proc.returncode is None:
                proc.kill()
        demo.cleanup()
    summary.update({"stopped_by": demo.stop_reason or "time", "ran_s": round(ran, 1),
                    "data_dir": str(demo.layout.root), "kept": demo.keep, "parts": demo.parts})
    if demo.warnings:
        summary["warnings"] = demo.warnings
    if demo.errors:
        summary.update(ok=False, errors=demo.errors)
    return _emit(args, summary, demo)


def _emit(args: argparse.Namespace, summary: dict[str, Any], demo: Demo | None) -> int:
    if args.json:
        # the same JSON, with bidi and control characters in vendor text written as \u escapes
        print(json_for_terminal(summary, sort_keys=True, default=str), flush=True)
    elif "error" in summary:
        print(f"error: {summary['error']}", file=sys.stderr)
    else:
        print(summary_text(summary), flush=True)
    return 0 if summary.get("ok") else 1


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole system on this machine: broker, box, vendors, forger",
                       description="Start a private broker, the box, three vendors and a forger, cast two "
                                   "intents and show the offers the box ranks and the messages it refuses. "
                                   "See docs/demo.md.")
    p.add_argument("--for", dest="seconds", type=float, default=None, metavar="SECONDS",
                   help="stop after SECONDS once everything runs (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON summary object on stdout; all other text goes to stderr")
    p.add_argument("--frames", metavar="DIR", help="write the display's PNG frames here "
                                                    "(default: DATA_DIR/frames when there is no terminal)")
    p.add_argument("--data-dir", metavar="DIR", help="keep everything in DIR (default: a temporary folder, "
                                                     "removed at the end)")
    p.add_argument("--scene", metavar="FILE", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)
