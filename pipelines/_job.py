"""The shared shell of every pipeline: ``--config YAML`` + ``key=value`` overrides -> job -> printed result."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from facerec.errors import FacerecError

J = TypeVar("J")


def run_job(
    prog: str,
    description: str,
    default_config: str | Path,
    argv: Sequence[str] | None,
    load: Callable[[str, list[str]], J],
    run: Callable[[J], str],
) -> int:
    """Parse ``argv``, build the job with ``load(config, overrides)``, print ``run(job)``.

    Overrides with an empty value (``device=``, as MLproject passes its defaults)
    are dropped, so the config file's value stands. A FacerecError prints one
    line and returns its exit code.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description.strip().splitlines()[0])
    parser.add_argument("--config", default=str(default_config), help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = [o for o in args.overrides if o.partition("=")[2].strip()]
    try:
        output = run(load(args.config, overrides))
    except FacerecError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(output)
    return 0
