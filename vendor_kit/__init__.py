"""Vendor kit: the vendor side of the VRM protocol (version: vrm_protocol.VERSION; API and the vrm-vendor CLI).

    identity   VendorIdentity: keys and public profile on disk
    catalogue  Catalogue, price_for: items and pricing rules (pure after loading)
    core       pure handlers: verified message + ledger state -> records to store and publish
    ledger     Ledger: the vendor's SQLite store (shared by workers on one directory)
    worker     VendorWorker, BrokerSettings: the MQTT shell
"""
from .catalogue import Catalogue, CatalogueError, CatalogueItem, Rule, offers_for, price_for
from .identity import IdentityError, VendorIdentity
from .ledger import Ledger
from .worker import BrokerSettings, VendorWorker

__all__ = ["Catalogue", "CatalogueError", "CatalogueItem", "Rule", "offers_for", "price_for", "IdentityError",
           "VendorIdentity", "Ledger", "BrokerSettings", "VendorWorker"]
