"""Companion web app for the phone, served on the home LAN (paired)."""
