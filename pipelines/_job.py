"""The shared shell of every pipeline: ``--config YAML`` + ``key=value`` overrides -> job -> printed result."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from facerec.cli import run_reporting

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

    An override with an empty value (``device=``, as MLproject passes its defaults)
    sets nothing (``facerec.config.parse_overrides``), so the config file's value
    stands. A FacerecError prints one line and returns its exit code (``facerec.cli.run_reporting``, as the CLI).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description.strip().splitlines()[0])
    parser.add_argument("--config", default=str(default_config), help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_reporting(prog, lambda: print(run(load(args.config, args.overrides))))
