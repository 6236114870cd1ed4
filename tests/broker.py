"""The tests' broker: the launcher the demo uses too (provisioning/launch.py)."""
from provisioning.launch import MOSQUITTO, Broker, free_port

__all__ = ["MOSQUITTO", "Broker", "free_port"]
