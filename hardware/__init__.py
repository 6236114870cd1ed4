"""Board profiles, wiring notes and the MicroPython peripheral."""
