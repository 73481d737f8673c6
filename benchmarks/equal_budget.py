"""Three ways to spend the same time on the same space and data, judged on the test set.

Each contender is one ``fmsearch run`` of ``--arch`` given the same ``--budget-hours`` on all
50,000 training images (10,000 validation), on one core (two contenders run at once, one per
core), repeated over seeds; what it would promote is judged on the 10,000 test images:

- fmsearch's plan: ``--budget-hours`` alone (the ladder, the finals, the ensemble decision);
- Keras Tuner's Hyperband over the same space (``--engine keras-tuner --tuner hyperband``);
- Optuna random search without pruning (``--sampler random --pruner none``), the baseline a
  user writes first.

The last two take trials until the budget is spent (a trial running then ends after its
epoch), each trial up to ``--max-epochs``, then promote their best.

    python -m benchmarks.equal_budget [--quick] [--arch cnn] [--minutes 30] [--seeds 0,1]
        [--parallel 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.budget_plan import QUICK_HOURS
from benchmarks.common import add_results_dir, write

CONTENDERS = {
    "fmsearch plan": [],
    "Keras Tuner Hyperband": ["--engine", "keras-tuner", "--tuner", "hyperband",
                              "--trials", "1000"],
    "Optuna random, no pruning": ["--sampler", "random", "--pruner", "none", "--trials", "1000"],
}  # fmt: skip


def contend(name: str, *, arch: str, seconds: float, seed: int, extra: list[str]) -> dict:
    """One contender's ``fmsearch run`` in a fresh directory, on one core; ``extra``: its
    own options and the shared ones."""
    from mlflow import MlflowClient

    command = [
        sys.executable, "-m", "search", "run", "--arch", arch, "--budget-hours",
        f"{seconds / 3600:.6f}", "--threads", "1", "--seed", str(seed), "-q", *extra,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FMSEARCH_STORAGE"):
        env.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{name} (seed {seed}) failed: {done.stderr[-2000:]}")
        client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
        champion = client.get_model_version_by_alias(f"fmsearch-{arch}", "champion")
        trials = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string="tags.`fmsearch.role` = 'trial'",
        )
    return {
        "contender": name,
        "seed": seed,
        "command": "fmsearch " + " ".join(command[3:]),
        "wall_seconds": wall,
        "trials": len(trials),
        "test_accuracy": float(champion.tags["test_accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="mlp on 300 images, two at a time: the plan in 75 s, the others 2 trials",
    )  # fmt: skip
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2, help="contenders at once")
    add_results_dir(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = ["--max-epochs", str(args.max_epochs)]
    contenders = dict(CONTENDERS)
    if args.quick:
        # 75 s (budget_plan's quick budget) beside one other contender: three TensorFlow
        # start-ups at once beside the rest of the suite took 74 s of a one-minute budget on a
        # slow CI host, leaving no room for a trial. The plan starts first; the other two take
        # turns beside it (about 40 s each).
        args.arch, args.minutes, seeds, args.parallel = "mlp", QUICK_HOURS * 60, [0], 2
        extra = ["--max-epochs", "2", "--subset", "300", "--val-size", "100"]
        # Smoke test: two trials show that the contenders that take trials until the budget
        # is spent work; only the plan needs the whole budget (it is sized to fill it).
        for name in ("Keras Tuner Hyperband", "Optuna random, no pruning"):
            contenders[name] = [a if a != "1000" else "2" for a in CONTENDERS[name]]
    jobs = [(name, seed) for seed in seeds for name in CONTENDERS]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(
            lambda job: contend(job[0], arch=args.arch, seconds=args.minutes * 60, seed=job[1],
                                extra=[*contenders[job[0]], *extra]),
            jobs,
        ))  # fmt: skip
    lines = [
        f"`--arch {args.arch}`, {args.minutes:g} min each (`--budget-hours "
        f"{args.minutes / 60:.3f}`), one core each ({args.parallel} at once), seeds "
        f"{', '.join(map(str, seeds))}; test accuracy of what each promoted (10,000 test "
        "images). Trials: tracked trial runs, summed over the seeds.",
        "",
        "| contender | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | trials |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for name in CONTENDERS:
        mine = [r for r in rows if r["contender"] == name]
        accuracies = [r["test_accuracy"] for r in mine]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{a:.4f}" for a in accuracies)
            + f" | {statistics.mean(accuracies):.4f} | {sum(r['trials'] for r in mine)} |"
        )
    path = write(
        "equal_budget_quick" if args.quick else "equal_budget",
        {"arch": args.arch, "minutes": args.minutes, "seeds": seeds, "results": rows},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
