"""VRM box daemon and command line."""
