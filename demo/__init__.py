"""`vrmbox demo`: the whole system on one machine (docs/demo.md).

scene.py     the scene file and the run's folder (pure)
output.py    the running line, the terminal panel, the summary (pure, and the stderr/panel writer)
supervise.py children in their own process groups, stopped tier by tier
run.py       `Demo`, the shell that starts and stops everything
guard.py     a process that stops the children if the demo itself is killed
mischief.py  the forger: offers the box must refuse
cli.py       `register(subparsers)` for the `vrmbox` command table
"""
