"""A short real search through the CLI, as a user runs it: time per trial and accuracies.

Runs ``fmsearch run`` in a fresh directory on the embedded default stores, then reads the
study and the registry back.

    python -m benchmarks.short_search [--quick] [--arch cnn --trials 10 --subset 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import add_results_dir, fmsearch_here, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 2 trials on 500 images")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--val-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    add_results_dir(parser)
    args = parser.parse_args()
    if args.quick:
        args.arch, args.trials, args.subset, args.max_epochs = "mlp", 2, 500, 2
        args.val_size = 1000
    command = [
        "fmsearch", "run", "--arch", args.arch, "--trials", str(args.trials),
        "--subset", str(args.subset), "--max-epochs", str(args.max_epochs),
        "--val-size", str(args.val_size),
        "--seed", str(args.seed),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        wall, _ = fmsearch_here(command[1:], cwd=Path(tmp))
        payload = summarize(Path(tmp), args.arch, " ".join(command), wall)
    payload["epochs_max"] = payload["n_trials"] * args.max_epochs
    r = payload
    table = "\n".join(
        [
            f"`{r['command']}` (default TPE sampler and Hyperband pruner, {args.val_size:,} "
            "validation images, the full 10,000-image test set for the champion).",
            "",
            "| trials (complete / pruned / failed) | epochs trained (of max) | wall time "
            "| median s per complete trial | median s per pruned trial | best val accuracy "
            "| champion test accuracy | macro F1 |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r['complete']} / {r['pruned']} / {r['failed']} | {r['epochs_trained']} "
            f"({r['epochs_max']}) | {r['wall_seconds'] / 60:.1f} min "
            f"| {r['median_complete_s']:.1f} | {r['median_pruned_s']:.1f} "
            f"| {r['best_val_accuracy']:.4f} | {r['test_accuracy']:.4f} "
            f"| {r['test_macro_f1']:.4f} |",
        ]
    )
    name = "short_search_quick" if args.quick else "short_search"
    path = write(name, payload, table, directory=args.results_dir)
    print(path.read_text())


def summarize(directory: Path, arch: str, command: str, wall: float) -> dict:
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=arch, storage=f"sqlite:///{directory}/mlruns/optuna.db")
    trials = study.trials
    seconds = {
        s: [t.duration.total_seconds() for t in trials if t.state == s and t.duration]
        for s in (TrialState.COMPLETE, TrialState.PRUNED)
    }
    epochs = sum((t.last_step + 1) for t in trials if t.last_step is not None)
    client = MlflowClient(f"sqlite:///{directory}/mlruns/mlflow.db")
    try:
        champion = client.get_model_version_by_alias(f"fmsearch-{arch}", "champion")
    except Exception as exc:
        versions = [(v.name, v.version, v.aliases) for v in client.search_model_versions()]
        raise RuntimeError(
            f"no champion of fmsearch-{arch} in {directory}/mlruns/mlflow.db "
            f"(its versions: {versions}; trials: {[t.state.name for t in trials][:10]})"
        ) from exc
    return {
        "command": command,
        "wall_seconds": wall,
        "complete": len(seconds[TrialState.COMPLETE]),
        "pruned": len(seconds[TrialState.PRUNED]),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": epochs,
        "n_trials": len(trials),
        "median_complete_s": statistics.median(seconds[TrialState.COMPLETE] or [0]),
        "median_pruned_s": statistics.median(seconds[TrialState.PRUNED] or [0]),
        "best_val_accuracy": study.best_value,
        "best_params": study.best_params,
        "test_accuracy": float(champion.tags["test_accuracy"]),
        "test_macro_f1": float(champion.tags["test_macro_f1"]),
    }


if __name__ == "__main__":
    main()
