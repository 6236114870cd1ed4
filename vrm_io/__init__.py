"""The few operating-system edges that the box, its companion app, provisioning and the vendor
kit all need, written once: private files that survive a power cut (`files`), systemd's
notify protocol (`notify`) and the paho MQTT client set-up with messages that expire with
their signature (`mqtt`).

Why a package of its own and not `vrm_protocol`: the protocol package is pure (no I/O, which
is what makes it easy to check and to reimplement), and the vendor kit, the other side of the
protocol, must not import `device/`. This package sits beside `vrm_protocol` on the bottom
floor; it may import `vrm_protocol`, never the other way round, and nothing above it.
"""
