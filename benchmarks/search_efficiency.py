"""Search efficiency at equal wall-clock budget: fmsearch's default against the alternatives.

Four searches of the same space on the same data subset, each given the same time budget
(``--timeout``: no trial starts after it) and repeated over several seeds:

- fmsearch's default: Optuna TPE sampler with Hyperband pruning;
- Optuna random search without pruning (the baseline a user writes first);
- Keras Tuner Hyperband and Keras Tuner Bayesian optimisation (``--engine keras-tuner``).

Each search is a real ``fmsearch run`` (in this process, in a fresh directory) and is
recorded like any. From each study: the best validation accuracy reached by each moment of
the budget (a trial counts when it finishes). The table gives the median and the range over
the seeds at a quarter, half and all of the budget; a PNG plots the median curves.

    python -m benchmarks.search_efficiency [--quick] [--arch mlp] [--budget-minutes 3]
        [--seeds 3] [--subset 10000] [--max-epochs 9]
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

CONTENDERS = {
    "fmsearch default (TPE + Hyperband)": ["--sampler", "tpe", "--pruner", "hyperband"],
    "Optuna random, no pruning": ["--sampler", "random", "--pruner", "none"],
    "Keras Tuner Hyperband": ["--engine", "keras-tuner", "--tuner", "hyperband"],
    "Keras Tuner Bayesian": ["--engine", "keras-tuner", "--tuner", "bayesian"],
}
# --quick: one search per engine.
QUICK = ("fmsearch default (TPE + Hyperband)", "Keras Tuner Hyperband")
CHECKPOINTS = (0.25, 0.5, 1.0)


def search(arch: str, extra: list[str], *, budget_s: float, seed: int, subset: int,
           max_epochs: int, val_size: int) -> dict:  # fmt: skip
    """One ``fmsearch run`` in a fresh directory; its best-so-far curve over time."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "run", "--arch", arch, "--trials", "1000", "--timeout", f"{budget_s:g}",
            "--subset", str(subset), "--val-size", str(val_size), "--max-epochs",
            str(max_epochs), "--patience", "0", "--seed", str(seed), "--no-promote", "-q",
            *extra,
        ]  # fmt: skip
        wall, study = fmsearch_here(args, cwd=Path(tmp))
        record = finished_over_time(study)
    curve, best = [], 0.0
    for seconds, value in record.pop("finished"):
        best = max(best, value)
        curve.append((seconds, best))
    return {"wall_seconds": wall, **record, "curve": curve}


def best_by(curve: list[tuple[float, float]], seconds: float) -> float:
    """The best validation accuracy finished by ``seconds`` (0 before the first trial)."""
    return max((v for s, v in curve if s <= seconds), default=0.0)


def plot(rows: dict, budget_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4))
    grid = [budget_s * i / 50 for i in range(1, 51)]
    for name, runs in rows.items():
        values = [[best_by(r["curve"], t) for r in runs] for t in grid]
        ax.plot([t / 60 for t in grid], [statistics.median(v) for v in values], label=name)
        ax.fill_between([t / 60 for t in grid], [min(v) for v in values],
                        [max(v) for v in values], alpha=0.15)  # fmt: skip
    ax.set_xlabel("minutes into the search")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_ylim(bottom=max(0.0, min(ax.get_ylim()[1] - 0.3, 0.5)))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="mlp, 3 s, one seed, one search per engine"
    )
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--budget-minutes", type=float, default=3.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=5_000)
    parser.add_argument("--max-epochs", type=int, default=9)
    add_results_dir(parser)
    args = parser.parse_args()
    if args.quick:
        args.arch, args.budget_minutes, args.seeds = "mlp", 3 / 60, 1
        args.subset, args.val_size, args.max_epochs = 500, 300, 2
    budget_s = args.budget_minutes * 60
    rows: dict[str, list[dict]] = {}
    names = QUICK if args.quick else CONTENDERS
    for name in names:
        extra = CONTENDERS[name]
        for seed in range(args.seeds):
            run = search(args.arch, extra, budget_s=budget_s, seed=seed, subset=args.subset,
                         max_epochs=args.max_epochs, val_size=args.val_size)  # fmt: skip
            rows.setdefault(name, []).append(run)
            print(name, seed, f"best {best_by(run['curve'], budget_s):.4f}",
                  f"{run['complete']} complete, {run['pruned']} pruned", flush=True)  # fmt: skip
    name = "search_efficiency_quick" if args.quick else "search_efficiency"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, budget_s, args.results_dir / f"{name}.png")
    header = " | ".join(f"at {int(c * 100)}% ({c * args.budget_minutes:.2g} min)"
                        for c in CHECKPOINTS)  # fmt: skip
    lines = [
        f"`{args.arch}` searched for {args.budget_minutes:g} min per run on {args.subset:,} "
        f"training and {args.val_size:,} validation images, at most {args.max_epochs} epochs "
        f"per trial, {args.seeds} seed(s) each; best validation accuracy reached by each point "
        "of the budget: median [min, max] over the seeds. Trials: complete / pruned, summed "
        f"over the seeds. Curves: `{name}.png`.",
        "",
        f"| search | {header} | trials | epochs trained |",
        "|---|" + "---|" * len(CHECKPOINTS) + "---|---|",
    ]
    for contender, runs in rows.items():
        cells = []
        for c in CHECKPOINTS:
            values = [best_by(r["curve"], c * budget_s) for r in runs]
            cells.append(f"{statistics.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]")
        complete = sum(r["complete"] for r in runs)
        pruned = sum(r["pruned"] for r in runs)
        epochs = sum(r["epochs_trained"] for r in runs)
        lines.append(f"| {contender} | {' | '.join(cells)} | {complete} / {pruned} | {epochs} |")
    payload = {
        "arch": args.arch,
        "budget_minutes": args.budget_minutes,
        "subset": args.subset,
        "val_size": args.val_size,
        "max_epochs": args.max_epochs,
        "seeds": args.seeds,
        "results": rows,
    }
    path = write(name, payload, "\n".join(lines), directory=args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
