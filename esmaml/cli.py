"""The ``esmaml`` command: ``train``, ``evaluate``, ``plot``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _train(args: argparse.Namespace) -> int:
    from esmaml.config import load_config
    from esmaml.logging.console import print_summary
    from esmaml.training.trainer import Trainer

    if args.resume:
        trainer = Trainer.resume(args.resume, list(args.overrides))
    else:
        if args.config is None:
            raise SystemExit("esmaml train: give a CONFIG file, or --resume RUN_DIR")
        config = load_config(args.config, list(args.overrides))
        trainer = Trainer(config, args.run_dir)
    summary = trainer.train()
    print_summary(summary, f"{trainer.config.name}: {trainer.run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esmaml", description="ES-MAML meta-learning.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="meta-train from a YAML config")
    train.add_argument("config", nargs="?", help="YAML config (see configs/)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. iterations=10")
    train.add_argument("--run-dir", help="run directory (default runs/<name>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its checkpoint")
    train.set_defaults(handler=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    from esmaml.config import ConfigError
    from esmaml.training.checkpoint import CheckpointError

    try:
        return int(args.handler(args) or 0)
    except (ConfigError, CheckpointError) as error:
        print(f"esmaml {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
