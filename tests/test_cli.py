import subprocess
import sys


def test_vrmbox_cli_starts():
    out = subprocess.run([sys.executable, "-m", "vrmbox", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    from vrm_protocol.messages import VERSION
    assert f"protocol v{VERSION}" in out.stdout


def _leaves(parser, path=()):
    """Every runnable subcommand parser, with its path of names."""
    import argparse
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for sub in subs:
        for name, p in sub.choices.items():
            yield from _leaves(p, path + (name,))


def test_every_command_has_json_output():
    from vrmbox.cli import build_parser
    leaves = list(_leaves(build_parser()))
    assert len(leaves) > 30
    missing = [" ".join(path) for path, p in leaves
               if not any("--json" in a.option_strings for a in p._actions)]
    assert missing == []


def test_a_bad_setting_names_the_key_and_the_value(tmp_path, capsys, monkeypatch):
    from vrmbox.cli import main
    from device.cli.common import EXIT_CONFIG
    monkeypatch.setenv("VRMBOX_CONFIG", str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text("[intake]\nper_vendor_burst = -3\n")
    assert main(["run", "--data-dir", str(tmp_path / "d")]) == EXIT_CONFIG    # systemd: 78/CONFIG
    err = capsys.readouterr().err
    assert "intake.per_vendor_burst" in err and "-3" in err
    (tmp_path / "c.toml").write_text("")
    assert main(["run", "--data-dir", str(tmp_path / "d"), "--broker", "htp://nowhere"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "broker.url" in err and "htp://nowhere" in err
