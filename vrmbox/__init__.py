"""The `vrmbox` command: the composition root that puts every area's subcommands in one table.

It stands above device/, companion_app/, hardware/, provisioning/ and demo/ and imports each
area's `register(subparsers)` by name, so the import graph shows who the command depends on;
none of those areas imports this package. Run it as `vrmbox` or `python -m vrmbox`.
"""
