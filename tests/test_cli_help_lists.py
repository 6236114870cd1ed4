"""Every `vrmbox` action of the box's own commands (device/cli) is listed in its group's --help:
an action registered without a help line is missing from the list, so a person never learns of
it (`vrmbox intent --help` once showed only add and preset)."""
from __future__ import annotations

import argparse
import importlib

import pytest

from vrmbox.cli import build_parser

BOX_MODULES = ("device.cli.data", "device.cli.market")


def groups(parser: argparse.ArgumentParser, path: str = "vrmbox"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield path, action
            for name, child in action.choices.items():
                yield from groups(child, f"{path} {name}")


def box_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrmbox")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in BOX_MODULES:
        importlib.import_module(name).register(sub)
    return parser


@pytest.mark.parametrize("path,action", list(groups(box_parser())), ids=lambda v: v if isinstance(v, str) else "")
def test_every_action_is_listed_in_its_groups_help(path, action):
    listed = {a.dest for a in action._choices_actions}
    assert set(action.choices) == listed, f"`{path} --help` does not list {sorted(set(action.choices) - listed)}"


def test_intent_help_names_every_intent_action():
    parser = build_parser()
    intent = parser._subparsers._group_actions[0].choices["intent"]
    text = intent.format_help()
    for action in ("add", "preset", "list", "withdraw"):
        assert f"    {action} " in text, text
