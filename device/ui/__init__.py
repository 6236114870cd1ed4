"""The box's own face: OLED screens and buttons (`vrmbox ui`, docs/ui.md).

Pure parts: text.py (fitting untrusted text), state.py (what the UI knows), navigation.py
(state + input -> state + requests), screens.py (state -> drawing), power.py (burn-in care).
Imperative shell: app.py (sockets, threads, render loop), keyboard.py, cli.py.
"""
