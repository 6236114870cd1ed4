"""First boot and install on Raspberry Pi OS: secrets, broker config, systemd units."""
