"""The CLI shell: help, argument order, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facerec.cli import build_parser, main, parse_args
from facerec.cli.commands import COMMANDS


def test_help_lists_every_command_without_heavy_imports():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from facerec.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'faiss', 'mlflow', 'open_clip', 'facenet_pytorch') if m in sys.modules]\n"
            "print('HEAVY', heavy)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(name in out for name in COMMANDS)
    assert "HEAVY []" in out


def test_overrides_may_follow_flags():
    args = parse_args(build_parser(), ["train", "--config", "c.yaml", "epochs=1", "--data", "/d", "seed=3"])
    assert args.overrides == ["epochs=1", "seed=3"] and args.data == "/d"


def test_unknown_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(build_parser(), ["train", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_user_error_is_one_line_and_non_zero(tmp_path, capsys):
    code = main(["train", "--config", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "config file not found" in err and "Traceback" not in err
