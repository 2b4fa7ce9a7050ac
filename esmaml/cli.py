"""The ``esmaml`` command: ``train``, ``evaluate``, ``plot``.

    esmaml train CONFIG [key=value ...] [--run-dir DIR]
    esmaml train --resume RUN_DIR [key=value ...]
    esmaml evaluate RUN_DIR [--num-tasks N] [--steps K [K ...]] [--split test|train]
    esmaml plot RUN_DIR [RUN_DIR ...] [--out DIR] [--band]
    esmaml sweep CONFIG --seeds N [key=v1,v2 ...] [--jobs J] [--address ADDR] [--out DIR]
    esmaml list [KIND ...]

Errors a user can fix (a bad config, a missing or corrupt checkpoint, nothing to plot, a run
directory another process is writing) print one line ``esmaml <command>: error: ...`` to stderr
and exit with status 2, like argparse's own. A failed write (a full disk, a file-size limit)
prints one such line and exits with status 1; what was written before stays intact.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

USAGE_ERROR = 2
RUNTIME_ERROR = 1


def _train(args: argparse.Namespace) -> int:
    from esmaml.config import ConfigError, load_config
    from esmaml.logging.console import print_summary
    from esmaml.training.trainer import Trainer

    overrides = list(args.overrides)
    if args.resume:
        if args.config is not None:
            # argparse hands the first positional to CONFIG; with --resume it is an override.
            if "=" not in args.config:
                raise ConfigError(
                    f"give either a CONFIG file or --resume RUN_DIR, not both (got {args.config!r}"
                    f" and --resume {args.resume!r}); a resumed run uses RUN_DIR/config.yaml"
                )
            overrides.insert(0, args.config)
        if args.run_dir is not None:
            raise ConfigError("--run-dir cannot be combined with --resume (the run dir is RUN_DIR)")
        trainer = Trainer.resume(args.resume, overrides)
    else:
        if args.config is None:
            raise ConfigError("give a CONFIG file (see configs/), or --resume RUN_DIR")
        if "=" in args.config and not os.path.exists(args.config):
            raise ConfigError(
                f"the first argument must be a CONFIG file, got the override {args.config!r}"
            )
        config = load_config(args.config, overrides)
        trainer = Trainer(config, args.run_dir)
    summary = trainer.train()
    print_summary(summary, f"{trainer.config.name}: {trainer.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from esmaml.training.trainer import evaluate_run

    result = evaluate_run(
        args.run_dir,
        num_tasks=args.num_tasks,
        steps=args.steps,
        split=args.split,
        command=args.command_line,
        out=args.out,
    )
    table = Table(
        title=f"{args.run_dir} @ iteration {result['iteration']}: {result['num_tasks']} "
        f"{'held-out' if args.split == 'test' else 'train'} tasks"
    )
    for column in ("steps", "pre-adaptation", "post-adaptation", "post std", "queries"):
        table.add_column(column, justify="right")
    for point in result["curve"]:
        table.add_row(
            str(point["steps"]),
            f"{point['pre_adaptation']:.6g}",
            f"{point['post_adaptation']:.6g}",
            f"{point['post_adaptation_std']:.6g}",
            str(point["queries"]),
        )
    Console().print(table)
    print(f"wrote {args.out or os.path.join(args.run_dir, 'eval.json')}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from esmaml.plotting import plot_band, plot_runs

    if args.band:
        path = plot_band(args.run_dirs, args.out, command=args.command_line)
        print(f"wrote {path} (+ {path.with_suffix('.txt').name})")
        return 0
    for path in plot_runs(args.run_dirs, args.out, command=args.command_line):
        print(f"wrote {path} (+ {path.with_suffix('.txt').name})")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from esmaml.sweep import format_table, sweep

    out = Path(args.out) if args.out else Path("runs") / "sweeps" / Path(args.config).stem
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = sweep(
        args.config, seeds, list(args.overrides), out=out, jobs=args.jobs, address=args.address
    )
    print(format_table(rows))
    print(f"run directories and sweep.md / sweep.json: {out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from esmaml.config import ConfigError
    from esmaml.registry import KINDS, list_components

    unknown = [kind for kind in args.kinds if kind not in KINDS]
    if unknown:
        raise ConfigError(f"unknown kind {unknown[0]!r}; valid: {', '.join(KINDS)}")
    previous = None
    for kind, name, source, parameters, doc in list_components(args.kinds or None):
        if kind != previous:
            print(f"{kind} ({KINDS[kind].key}; entry-point group {KINDS[kind].group}):")
            previous = kind
        print(f"  {name}({parameters})")
        print(f"      {doc}" if doc else "      (no docstring)")
        print(f"      from {source}")
    return 0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esmaml", description="ES-MAML meta-learning.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train from a YAML config, or resume a run")
    train.add_argument("config", nargs="?", help="YAML config (see configs/)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. iterations=10")
    train.add_argument("--run-dir", help="run directory (default runs/<name>-<timestamp>)")
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint"
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a run's checkpoint on held-out tasks; writes RUN_DIR/eval.json"
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument(
        "--num-tasks", type=_positive_int, help="tasks to evaluate (default evaluation.num_tasks)"
    )
    evaluate.add_argument(
        "--steps",
        type=_non_negative_int,
        nargs="+",
        metavar="K",
        help="adaptation steps, one evaluation each (e.g. --steps 0 1 2 5 gives a curve)",
    )
    evaluate.add_argument("--split", choices=("test", "train"), default="test")
    evaluate.add_argument("--out", help="where to write the JSON (default RUN_DIR/eval.json)")
    evaluate.set_defaults(handler=_evaluate)

    plot = commands.add_parser(
        "plot", help="learning curves of one or more runs (PNG + .txt caption)"
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument(
        "--out", help="output directory (default: the run dir, or the one holding the runs)"
    )
    plot.add_argument(
        "--band",
        action="store_true",
        help="group the runs by config (seed aside): mean over seeds with a 95%% t-band",
    )
    plot.set_defaults(handler=_plot)

    sweep = commands.add_parser(
        "sweep", help="train a config over seeds (and a grid of overrides) in parallel on Ray"
    )
    sweep.add_argument("config", help="YAML config (see configs/)")
    sweep.add_argument("overrides", nargs="*", help="key=v1,v2 grid axes, or key=value")
    sweep.add_argument("--seeds", type=_positive_int, default=5, help="seeds per point (5)")
    sweep.add_argument("--first-seed", type=_non_negative_int, default=0)
    sweep.add_argument("--jobs", type=_positive_int, default=2, help="local CPUs (one per run)")
    sweep.add_argument("--address", help="an existing Ray cluster (auto, or HOST:PORT)")
    sweep.add_argument("--out", help="sweep directory (default runs/sweeps/<config name>)")
    sweep.set_defaults(handler=_sweep)

    from esmaml.registry import KINDS

    listing = commands.add_parser(
        "list",
        help="every registered component (built in, entry points) with its parameters and doc",
    )
    listing.add_argument("kinds", nargs="*", metavar="KIND", help=f"any of {', '.join(KINDS)}")
    listing.set_defaults(handler=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything imports wandb: its error reporting would call home at exit.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(arguments)
    if extra:
        # argparse stops filling the overrides at the first option: `train CONFIG --run-dir D
        # a=1` leaves a=1 over. Overrides may stand anywhere; anything else is an error.
        if args.command in ("train", "sweep") and all(
            "=" in item and item[0] != "-" for item in extra
        ):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = shlex.join(["esmaml", *arguments])
    from esmaml.config import ConfigError
    from esmaml.plotting import PlotError
    from esmaml.training.checkpoint import CheckpointError
    from esmaml.training.lock import RunDirLockedError

    try:
        return int(args.handler(args) or 0)
    except (ConfigError, CheckpointError, PlotError, RunDirLockedError) as error:
        print(f"esmaml {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as error:  # a full disk, a file-size limit, a vanished directory
        print(f"esmaml {args.command}: error: {_os_error(error)}", file=sys.stderr)
        return RUNTIME_ERROR


def _os_error(error: OSError) -> str:
    """One line: the file and the system's reason."""
    reason = error.strerror or (str(error).splitlines() or [type(error).__name__])[0]
    return f"{error.filename!r}: {reason}" if error.filename else reason


if __name__ == "__main__":
    sys.exit(main())
