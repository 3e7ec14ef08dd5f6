"""The ``facerec`` command line: subcommands, ``--json``, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from facerec import __version__
from facerec.cli.commands import COMMANDS

#: Set (to anything but empty or 0) to print the whole traceback chain, causes included, under each error line.
DEBUG_ENV = "FACEREC_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerec", description="Face verification and recognition: crop, embed, train, evaluate, gallery."
    )
    parser.add_argument("--version", action="version", version=f"facerec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may come before or after the flags."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = getattr(args, "overrides", None)
        if isinstance(overrides, list) and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "urllib3", "matplotlib", "PIL", "mlflow.store", "httpx", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report(prog: str, message: str) -> None:
    """The one error line; under FACEREC_DEBUG the traceback chain of the exception being handled first."""
    if debugging():
        traceback.print_exc(file=sys.stderr)
    print(f"{prog}: {message}", file=sys.stderr)


def run_reporting(prog: str, job: Callable[[], int | None]) -> int:
    """Run ``job()`` and turn what it raises into one line on stderr and an exit code.

    Exit codes: 0 done, 2 a user error (a FacerecError; argparse also exits 2 on bad
    arguments), 1 an internal error (a bug), 130 interrupted (Ctrl-C). With FACEREC_DEBUG
    the whole traceback chain, causes included, comes before the line.
    """
    from facerec.errors import FacerecError

    try:
        return int(job() or 0)
    except FacerecError as exc:
        report(prog, f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        report(prog, "interrupted")
        return 130
    except Exception as exc:  # a bug: still one line unless debugging
        reason = str(exc).splitlines()[0] if str(exc) else ""
        hint = "" if debugging() else f" ({DEBUG_ENV}=1 for a traceback)"
        report(prog, f"internal error: {type(exc).__name__}: {reason}{hint}")
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; errors print one line and return non-zero (see ``run_reporting``)."""
    args = parse_args(build_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    return run_reporting(f"facerec {args.command}", lambda: args._module.run(args))


def entry() -> None:
    """The ``facerec`` command and ``python -m facerec``: ``main``, then exit with its code.

    Before exiting, every object is moved out of the garbage collector's reach
    (``gc.freeze``): with torch loaded, the interpreter's last collection walks millions of
    objects that are about to go anyway, ~0.3 s of a cold ``facerec verify`` (3 s budget).
    Objects are still released and files closed as usual; only cycles among them are left
    to the process's end.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
