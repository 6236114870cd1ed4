"""`vrmbox demo`: the whole system on one machine, in one command (docs/demo.md).

Why a separate orchestrator rather than a shell script: it must start a private broker, the
box, three vendors, a forger and (when they exist) the display and the phone app in the right
order; read the box's own figures at the end; and leave no process behind whatever stops it
(time, Ctrl-C, SIGTERM, its own SIGKILL). Every child runs in its own session (its own process
group), is stopped tier by tier (front ends and vendors, the daemon, the broker) and waited for;
on Linux each child also gets `PR_SET_PDEATHSIG`, so even a SIGKILLed demo takes them along
(demo/supervise.py).

The scene (vendors, catalogues, profile, intents) is data: examples/demo/scene.yaml
(demo/scene.py). What it shows is demo/output.py; `Demo` here is the shell.
"""
from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any, Callable, Collection

from device.textsafe import json_for_terminal
from provisioning.launch import ROOT, Broker, Proc, free_port, python_module

from .output import Output, Tally, event_line, panel_top, summarise, summary_text
from .scene import SCENE_FILE, DemoError, DemoFolder, DemoIntent, Scene, box_config_text, load_scene
from .supervise import TIER_BROKER, TIER_DAEMON, TIER_FRONT, child_kwargs, exited, stop_tier

log = logging.getLogger(__name__)

READY = "READY"
START_TIMEOUT_S = 30.0          # per child, to print READY (a loaded 2-core machine is slow)
STOP_TIMEOUT_S = 15.0           # per tier, after SIGTERM, before SIGKILL
CLI_TIMEOUT_S = 60.0
PORT_TIMEOUT_S = 20.0           # the companion app's port must accept connections by then
OPTIONAL_PARTS = ("ui", "companion")   # the demo goes on without them


class Interrupted(Exception):
    """SIGINT/SIGTERM during start-up: unwind and stop what already runs."""


def vrmbox_argv(*args: str) -> list[str]:
    return python_module("vrmbox", *args)


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


class Demo:
    def __init__(self, args: argparse.Namespace, scene: Scene, commands: Collection[str] = ()) -> None:
        self.args = args
        self.scene = scene
        self.commands = frozenset(commands)   # the `vrmbox` subcommands this tree has
        self.keep = args.data_dir is not None
        root = Path(args.data_dir).resolve() if self.keep else Path(tempfile.mkdtemp(prefix="vrmbox-demo-"))
        self.folder = DemoFolder(root, Path(args.frames).resolve() if args.frames else root / "frames")
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
        self.guard = subprocess.Popen(python_module("demo.guard"), stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=open(self.folder.log("guard"), "ab"),
                                      cwd=ROOT, env=os.environ.copy(), start_new_session=True)
        if not self.keep:
            self._tell_guard(f"remove {self.folder.root}")

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
        L = self.folder
        for d in (L.root, L.box.parent, L.logs, L.root / "vendors"):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(L.root, 0o700)

    def start(self) -> None:
        L, scene = self.folder, self.scene
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
            self._launch(python_module("demo.mischief", "--dir", str(L.vendor(bad.slug)),
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
        proc = Proc(argv, self.folder.log(name), ready=READY)
        self.procs[name] = proc
        self.guard_when_started(tier, proc)
        try:
            proc.start(timeout=START_TIMEOUT_S)
        except RuntimeError as exc:
            raise DemoError(f"{name} did not start (log {self.folder.log(name)}):\n{exc}") from exc
        return proc

    def _subscribe(self) -> None:
        """The box's event stream through `vrmbox events` (the CLI: a stable interface, where
        importing the daemon's client module would tie the demo to its internals)."""
        logf = open(self.folder.log("events"), "ab")
        p = subprocess.Popen(vrmbox_argv("events"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=logf, cwd=ROOT, **child_kwargs())
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
        logf = open(self.folder.log("ui"), "ab")
        try:
            import termios
            self._tty = termios.tcgetattr(sys.stdin.fileno())   # restored even if the UI is killed
        except (ImportError, OSError, ValueError):
            self._tty = None
        p = subprocess.Popen(argv, stdout=sys.stdout, stderr=logf, cwd=ROOT, **child_kwargs())
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
        commands = self.commands
        L = self.folder
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
        L, p = self.folder, self.parts
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
            dead = [name for name, p in required if exited(p.pid)]
            if dead:
                self.stop_reason = "failure"
                self.errors.append(f"{', '.join(dead)} exited unexpectedly (logs in {self.folder.logs})")
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
        if not (self.folder.box / "keys").exists():
            return {}
        outs = self.cli_all([(vrmbox_argv("offers", "--json"), "vrmbox offers"),
                             (vrmbox_argv("offers", "--all", "--json"), "vrmbox offers --all"),
                             (vrmbox_argv("rejections", "--json"), "vrmbox rejections"),
                             (vrmbox_argv("agreements", "--json"), "vrmbox agreements")])
        return summarise(*(json.loads(o) for o in outs))

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.folder.root, ignore_errors=True)


def cmd_demo(args: argparse.Namespace, commands: Collection[str] = ()) -> int:
    """`commands`: the `vrmbox` subcommands there are (the display and the phone app start only
    if theirs are among them)."""
    try:
        scene = load_scene(Path(args.scene) if args.scene else SCENE_FILE)
    except DemoError as exc:
        return _emit(args, {"ok": False, "error": str(exc)}, None)
    demo = Demo(args, scene, commands)
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
                    "data_dir": str(demo.folder.root), "kept": demo.keep, "parts": demo.parts})
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


