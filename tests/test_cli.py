"""The CLI shell: help, argument order, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facerec.cli import build_parser, main, parse_args
from facerec.cli.commands import COMMANDS


def test_help_lists_every_command_and_imports_no_heavy_library():
    """`python -m facerec --help` as a user runs it; -X importtime names every module the process imported."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "facerec", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert all(name in out.stdout for name in COMMANDS)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "facerec" in imported  # the parse worked: the test would see heavy imports
    assert imported.isdisjoint({"torch", "numpy", "faiss", "mlflow", "open_clip", "facenet_pytorch"})


def test_the_command_exits_with_mains_code_and_its_output_whole(tmp_path):
    """`python -m facerec` goes through ``entry`` (which freezes the collector before exiting)."""
    missing = subprocess.run(
        [sys.executable, "-m", "facerec", "verify", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
    done = subprocess.run([sys.executable, "-m", "facerec", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("facerec ")


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


# ------------------------------------------------------- the last-resort handlers
def boom(message: str = "boom"):
    def run(args):
        raise RuntimeError(f"{message}\nsecond line")

    return run


def test_an_internal_error_is_one_line_and_exit_1(monkeypatch, capsys):
    import facerec.cli.commands.gallery as command

    monkeypatch.delenv("FACEREC_DEBUG", raising=False)
    monkeypatch.setattr(command, "run", boom())
    code = main(["gallery", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "facerec gallery: internal error: RuntimeError: boom (FACEREC_DEBUG=1 for a traceback)\n"


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    import facerec.cli.commands.gallery as command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run", interrupted)
    assert main(["gallery", "list"]) == 130
    assert capsys.readouterr().err == "facerec gallery: interrupted\n"


def test_facerec_debug_prints_the_whole_chain_then_the_one_line(monkeypatch, tmp_path, capsys):
    """A user error keeps its cause (raise ... from exc): FACEREC_DEBUG shows both, then the usual line."""
    monkeypatch.setenv("FACEREC_DEBUG", "1")
    code = main(["train", "--config", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.index("FileNotFoundError") < err.index("direct cause") < err.index("ConfigError: config file not found")
    assert err.splitlines()[-1].startswith("facerec train: error: config file not found")


def test_facerec_debug_shows_an_internal_error_s_traceback(monkeypatch, capsys):
    import facerec.cli.commands.gallery as command

    monkeypatch.setenv("FACEREC_DEBUG", "1")
    monkeypatch.setattr(command, "run", boom("kaput"))
    assert main(["gallery", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: kaput" in err
    assert err.splitlines()[-1] == "facerec gallery: internal error: RuntimeError: kaput"


@pytest.mark.parametrize("value", ["", "0"])
def test_facerec_debug_off_means_no_traceback(monkeypatch, tmp_path, capsys, value):
    monkeypatch.setenv("FACEREC_DEBUG", value)
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "Traceback" not in capsys.readouterr().err
