"""The demo's scene (examples/demo/scene.yaml: vendors, catalogues, profile, intents), checked,
and the folder one run writes everything to. Pure: no processes, no terminal."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from provisioning.launch import ROOT
from vendor_kit.catalogue import Catalogue, CatalogueError

SCENE_FILE = ROOT / "examples" / "demo" / "scene.yaml"


class DemoError(Exception):
    """The demo cannot go on; the message says what failed and where its log is."""


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
class DemoFolder:
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


def box_config_text(folder: DemoFolder, broker_url: str) -> str:
    """The box's config for this demo run; `vrmbox` in another terminal reads it via $VRMBOX_CONFIG."""
    return (f"# Written by `vrmbox demo` for this run only (see docs/demo.md).\n"
            f"data_dir = {_toml_str(str(folder.box))}\n\n"
            f"[broker]\nurl = {_toml_str(broker_url)}\n")
