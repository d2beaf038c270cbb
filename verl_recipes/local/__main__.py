"""``python -m verl_recipes.local {grpo,sft} [--dry-run] [key=value ...]`` — the local backend CLI.

Also reached through ``bash model_train.sh local`` and ``bash model_train.sh local_sft``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from logdata.cliargs import add_flag, new_parser
from verl_recipes.local.chat.config import LocalConfigError, build_config
from verl_recipes.local.chat.data import LocalDataError


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = new_parser("python -m verl_recipes.local", __doc__)
    parser.add_argument("mode", choices=["grpo", "sft"], help="GRPO (RL) or SFT (rationales)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. model=PATH (default: none)")
    add_flag(parser, "--dry-run", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the config, train; one-line errors with exit status 2."""
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = build_config(args.mode, args.overrides)
        if args.dry_run:
            print(json.dumps(cfg, indent=2, sort_keys=True))
            return 0
        if args.mode == "grpo":
            from verl_recipes.local.chat.grpo import run_grpo as run
        else:
            from verl_recipes.local.chat.sft import run_sft as run
        final = run(cfg)
    except (LocalConfigError, LocalDataError, FileNotFoundError, OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"final model: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
