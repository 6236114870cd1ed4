import subprocess
import sys


def test_vrmbox_cli_starts():
    out = subprocess.run([sys.executable, "-m", "device.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "protocol v1" in out.stdout
