"""Kept so that `device.migrations` stays importable: the code lives in device/store/migrations.py."""
from .store.migrations import SCHEMA_VERSION, UPGRADES, SchemaError, migrate

__all__ = ["SCHEMA_VERSION", "UPGRADES", "SchemaError", "migrate"]
