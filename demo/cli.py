"""`vrmbox demo`'s place in the command table."""
from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from .run import cmd_demo


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
    # The table's own list of subcommands, read when the demo runs (so complete by then): the
    # demo asks the table rather than importing the command line that stands above it.
    p.set_defaults(func=partial(cmd_demo, commands=sub.choices))
