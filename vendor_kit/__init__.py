"""Vendor kit: the vendor side of VRM protocol v1 (API and the vrm-vendor CLI)."""
