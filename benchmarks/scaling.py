"""Scaling on one machine: trials/hour with 1 and 2 worker processes.

The same ``fmsearch run`` (random sampler, no pruning, so that every trial does the same work
on average and the seeds make both runs draw the same configurations) with ``--workers 1``
and ``--workers 2``; fmsearch splits the CPU threads between the workers. Trials/hour counts
from the first trial's start to the last trial's end (start-up excluded), and over the whole
command.

    python -m benchmarks.scaling [--quick] [--arch mlp] [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import add_results_dir, fmsearch_here, write

WORKERS = (1, 2)


def measure(args: argparse.Namespace, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, study = fmsearch_here(
            ["run", "--arch", args.arch, "--trials", str(args.trials), "--workers",
             str(workers), "--sampler", "random", "--pruner", "none", "--patience", "0",
             "--subset", str(args.subset), "--val-size", str(args.val_size),
             "--max-epochs", str(args.max_epochs), "--seed", "0", "--no-promote", "-q"],
            cwd=Path(tmp),
        )  # fmt: skip
        trials = [t for t in study.trials if t.datetime_complete is not None]
        span = (
            max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        ).total_seconds()
    return {
        "workers": workers,
        "trials": len(trials),
        "wall_seconds": wall,
        "trial_span_seconds": span,
        "trials_per_hour": len(trials) / span * 3600,
        "trials_per_hour_whole_command": len(trials) / wall * 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 2 trials")
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=5_000)
    parser.add_argument("--max-epochs", type=int, default=5)
    add_results_dir(parser)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.subset, args.val_size, args.max_epochs = 2, 300, 300, 1
    rows = [measure(args, w) for w in WORKERS]
    base = rows[0]["trials_per_hour"]
    lines = [
        f"`{args.arch}`, {args.trials} trials (random sampler, no pruning, seed 0), "
        f"{args.subset:,} training and {args.val_size:,} validation images, "
        f"{args.max_epochs} epochs each, on {os.cpu_count()} cores.",
        "",
        "| workers | trials/hour (trials only) | speed-up | trials/hour (whole command) "
        "| wall time |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['trials_per_hour']:.0f} | {r['trials_per_hour'] / base:.2f}x "
            f"| {r['trials_per_hour_whole_command']:.0f} | {r['wall_seconds'] / 60:.1f} min |"
        )
    path = write(
        "scaling_quick" if args.quick else "scaling",
        {"arch": args.arch, "trials": args.trials, "results": rows},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
