"""The ``facerec`` command line: subcommands, ``--json``, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from facerec import __version__
from facerec.cli.commands import COMMANDS

log = logging.getLogger(__name__)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; user errors print one line and return non-zero, never a traceback."""
    args = parse_args(build_parser(), argv)
    configure_logging(args.verbose, args.quiet)
    from facerec.errors import FacerecError

    try:
        return int(args._module.run(args) or 0)
    except FacerecError as exc:
        print(f"facerec {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"facerec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: still one line unless debugging
        if os.environ.get("FACEREC_DEBUG"):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"facerec {args.command}: internal error: {type(exc).__name__}: {reason} (FACEREC_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
