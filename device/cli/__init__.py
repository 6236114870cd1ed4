"""The box's own `vrmbox` subcommands: `data.py` (the person's data), `market.py` (intents,
offers, agreements), `common.py` (options, the config and data-dir resolver, output) and
`as_box.py` (root asks as the box's account).

The command table that puts these beside the other areas' subcommands is vrmbox/cli.py, the
composition root above device/; run the command as `vrmbox` or `python -m vrmbox`.
"""
