"""`vrm-vendor` command line (the vendor kit)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vrm-vendor", description="Answer VRM intents with signed offers.")
    parser.add_argument("--version", action="version", version="vrm-vendor 0.1.0 (VRM protocol v1)")
    parser.parse_args(argv)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
