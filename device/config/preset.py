"""A preset: an intent the box's button casts with one press ([[presets]] in the config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

MAX_PRESETS = 32
MAX_ATTRS = 50
MAX_STR = 2000


@dataclass(frozen=True)
class Preset:
    """What is shown (name) and what is published (category, description, attributes)."""

    name: str
    category: str
    description: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
