"""Fine-tuning pipeline: ``python pipelines/finetune.py --config configs/train/quick.yaml [key=value ...]``.

Same arguments as ``facerec train`` (it is that command); also the entry point
for several GPUs: ``torchrun --nproc_per_node 4 pipelines/finetune.py --config ...``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from facerec.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
