"""Text made from the key declaration: the commented config.toml (what `vrmbox provision` writes,
and config/vrmbox.example.toml) and the key tables of docs/config.md.

`python -m device.config.render --write` rewrites the example file and the tables in the doc;
`--check` says whether they are in step (a test runs it).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from .keys import KEYS, OPTIONAL_SECTIONS, PROCESS_USER, SECTIONS, Key

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "vrmbox.example.toml"
DOC = ROOT / "docs" / "config.md"
EXAMPLE_HEADER = """VRM box configuration (example).

Copy to /etc/vrmbox/config.toml (or point $VRMBOX_CONFIG at it). Every key is optional:
a value shown here uncommented IS the built-in default, so this file loads to exactly the
defaults, except for the [[presets]] at the end (there are none by default).
Commented-out keys have no default value (or one computed at start), shown in the comment.
Unknown keys are errors. Relative paths are relative to this file's directory.
Full reference: docs/config.md (both made from device/config/keys.py)."""
PRESETS_EXAMPLE = """# Presets: intents a button can cast with one press. None by default; these are examples.
[[presets]]
name = "Bike"
category = "bikes"
description = "A folding bike for commuting"
attributes = { postcode_district = "SW1A", budget_max = 800, currency = "EUR" }

[[presets]]
name = "Broadband"
category = "broadband"
attributes = { postcode_district = "SW1A", min_mbps = 100 }
"""
_BEGIN = "<!-- keys {section}: made from device/config/keys.py; python -m device.config.render --write -->"
_END = "<!-- end keys {section} -->"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def config_toml(values: Mapping[str, Any], header: str, presets: str = "") -> str:
    """The file: `values` (dotted keys) win; other keys show their default, or are commented out
    with an example when there is none. Unknown keys are refused."""
    unknown = [k for k in values if k.rpartition(".")[0] not in SECTIONS
               or k.rpartition(".")[2] not in SECTIONS[k.rpartition(".")[0]]]
    if unknown:
        raise ValueError(f"not config keys: {unknown}")
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    for section, keys in SECTIONS.items():
        optional = section in OPTIONAL_SECTIONS and not any(k.startswith(f"{section}.") for k in values)
        if section:
            out.append("")
            if section in OPTIONAL_SECTIONS:
                out.append(f"# {OPTIONAL_SECTIONS[section]}")
            out.append(f"# [{section}]" if optional else f"[{section}]")
        for key, k in keys.items():
            if k.name == "presets":
                continue
            out.append(f"# {k.help}")
            value = values.get(k.name, k.default)
            if value is None:
                out.append(f"# {key} = {toml_value(k.example)}" if k.example is not None else f"# {key} =")
            elif optional:
                out.append(f"# {key} = {toml_value(value)}")
            else:
                out.append(f"{key} = {toml_value(value)}")
    out.append("")
    out.append(presets.rstrip() if presets else "# " + SECTIONS[""]["presets"].help)
    return "\n".join(out) + "\n"


def set_key(text: str, dotted: str, value: Any) -> str:
    """`text` with one key set, everything else (the person's edits, comments) as it was: the
    key's line in its section (commented out or not) is replaced, else added to the section,
    else the section is added."""
    section, _, key = dotted.rpartition(".")
    lines = text.split("\n")
    new = f"{key} = {toml_value(value)}"
    current = ""
    start = None
    for i, line in enumerate(lines):
        head = re.fullmatch(r"\s*(?:#\s*)?\[([A-Za-z_]+)\]\s*", line)
        if line.lstrip().startswith("[["):
            current = "[["                     # an array of tables: no section of ours
            continue
        if head and not line.lstrip().startswith("#"):
            current = head.group(1)
            if current == section:
                start = i
            continue
        if current == section and re.match(rf"\s*(?:#\s*)?{re.escape(key)}\s*=", line):
            lines[i] = new
            return "\n".join(lines)
    if start is not None:
        lines.insert(start + 1, new)
        return "\n".join(lines)
    return text.rstrip("\n") + f"\n\n[{section}]\n{new}\n"


def example_toml() -> str:
    return config_toml({}, EXAMPLE_HEADER, PRESETS_EXAMPLE)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_cell(k: Key) -> str:
    if k.default_doc is not None:
        return k.default_doc
    if k.default is None:
        return "none"
    if isinstance(k.default, tuple) and not k.default:
        return "`[]`"
    return f"`{toml_value(k.default)}`"


def _readers_cell(k: Key) -> str:
    return ", ".join(f"{r} ({PROCESS_USER[r]})" if r != "cli" else "cli" for r in
                     sorted(k.readers, key=("daemon", "ui", "companion", "cli").index))


def key_table(section: str) -> str:
    rows = ["| key | type | default | read by | meaning |", "|---|---|---|---|---|"]
    for k in KEYS:
        if k.section != section:
            continue
        meaning = k.help + (f" {k.notes}" if k.notes else "")
        rows.append(f"| `{k.name}` | {_cell(k.kind)} | {_cell(_default_cell(k))} | "
                    f"{_readers_cell(k)} | {_cell(meaning)} |")
    return "\n".join(rows)


def doc_with_tables(doc: str) -> str:
    """docs/config.md with every generated table replaced by the declaration's."""
    for section in SECTIONS:
        name = section or "top"
        begin, end = _BEGIN.format(section=name), _END.format(section=name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(doc):
            raise ValueError(f"docs/config.md has no table markers for [{name}]: add\n{begin}\n{end}")
        doc = pattern.sub(lambda _m: f"{begin}\n{key_table(section)}\n{end}", doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="rewrite the example file and the doc's tables")
    p.add_argument("--check", action="store_true", help="exit 1 when either is out of step")
    args = p.parse_args(argv)
    want = {EXAMPLE: example_toml(), DOC: doc_with_tables(DOC.read_text(encoding="utf-8"))}
    stale = [path for path, text in want.items() if path.read_text(encoding="utf-8") != text]
    if args.write:
        for path in stale:
            path.write_text(want[path], encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    for path in stale:
        print(f"{path.relative_to(ROOT)} is out of step: python -m device.config.render --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
