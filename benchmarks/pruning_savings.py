"""What pruning saves: the same search with Hyperband pruning and without.

Two ``fmsearch run``s per seed (in this process, fresh directories), TPE sampler, the same
trials budget, space, data and seed: one with fmsearch's default Hyperband pruner, one with
``--pruner none``. Recorded: epochs trained, wall time, the best validation accuracy, and
when the pruned search first reached the unpruned search's best (within 0.5 point).

    python -m benchmarks.pruning_savings [--quick] [--arch mlp] [--trials 30] [--seeds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import add_results_dir, finished_over_time, fmsearch_here, write

PRUNERS = ("hyperband", "none")
# "Reached the unpruned best" allows this much less validation accuracy.
TOLERANCE = 0.005


def search(args: argparse.Namespace, *, pruner: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, study = fmsearch_here(
            ["run", "--arch", args.arch, "--trials", str(args.trials), "--sampler", "tpe",
             "--pruner", pruner, "--patience", "0", "--subset", str(args.subset),
             "--val-size", str(args.val_size), "--max-epochs", str(args.max_epochs),
             "--seed", str(seed), "--no-promote", "-q"],
            cwd=Path(tmp),
        )  # fmt: skip
        record = finished_over_time(study)
    return {
        "wall_seconds": wall,
        **record,
        "best": max(v for _, v in record["finished"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 2 trials, one seed")
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=5_000)
    parser.add_argument("--max-epochs", type=int, default=9)
    add_results_dir(parser)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds, args.subset, args.val_size, args.max_epochs = 2, 1, 300, 300, 2
    runs = {p: [search(args, pruner=p, seed=s) for s in range(args.seeds)] for p in PRUNERS}
    reached = []
    for pruned, full in zip(runs["hyperband"], runs["none"], strict=True):
        target = full["best"] - TOLERANCE
        when = next((s for s, v in pruned["finished"] if v >= target), None)
        pruned["seconds_to_unpruned_best"] = when
        reached.append(when)
    lines = [
        f"`{args.arch}`, {args.trials} trials per search (TPE), {args.subset:,} training and "
        f"{args.val_size:,} validation images, at most {args.max_epochs} epochs per trial, "
        f"seeds 0-{args.seeds - 1}: one search per seed with Hyperband pruning and one without. "
        f"'Reached': when the pruned search first had a trial within {TOLERANCE * 100:g} point "
        "of the unpruned search's best (median over the seeds; - where it never did).",
        "",
        "| pruner | epochs trained (median) | wall time (median) | trials complete / pruned "
        "(total) | best val accuracy (median [min, max]) | reached unpruned best |",
        "|---|---|---|---|---|---|",
    ]
    for pruner in PRUNERS:
        r = runs[pruner]
        best = [x["best"] for x in r]
        hit = [w for w in reached if w is not None] if pruner == "hyperband" else []
        when = f"{statistics.median(hit) / 60:.1f} min ({len(hit)}/{len(r)} seeds)" if hit else "-"
        lines.append(
            f"| {pruner} | {statistics.median(x['epochs_trained'] for x in r):g} "
            f"| {statistics.median(x['wall_seconds'] for x in r) / 60:.1f} min "
            f"| {sum(x['complete'] for x in r)} / {sum(x['pruned'] for x in r)} "
            f"| {statistics.median(best):.4f} [{min(best):.4f}, {max(best):.4f}] "
            f"| {when} |"
        )
    payload = {"arch": args.arch, "trials": args.trials, "max_epochs": args.max_epochs,
               "subset": args.subset, "results": runs}  # fmt: skip
    path = write(
        "pruning_savings_quick" if args.quick else "pruning_savings",
        payload,
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
