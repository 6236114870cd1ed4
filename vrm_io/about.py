"""What `--version` says, for `vrmbox` and `vrm-vendor` alike: the installed distribution's
version (from its package metadata, so pyproject.toml is the one place it is written) and the
version of the protocol this code speaks (vrm_protocol.messages.VERSION)."""
from __future__ import annotations

import logging
from importlib import metadata

from vrm_protocol.messages import VERSION as PROTOCOL_VERSION

log = logging.getLogger(__name__)

DISTRIBUTION = "vrmbox"      # pyproject.toml [project] name: both commands ship in it


def package_version() -> str:
    """The installed version; "unknown" when run from a tree that was never installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_line(program: str) -> str:
    """e.g. "vrmbox 0.1.0 (VRM protocol v2)"."""
    return f"{program} {package_version()} (VRM protocol v{PROTOCOL_VERSION})"
