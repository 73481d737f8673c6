"""Memory over many trials in one process, with and without fmsearch's per-trial cleanup.

Keras keeps every model's graph in its global session unless it is cleared (optuna#1178,
#3050). Runs the same small study twice in fresh subprocesses, once as fmsearch runs it
(``keras.backend.clear_session`` + ``gc.collect`` after each trial) and once with the cleanup
switched off, and records the resident memory after every trial. Every trial trains the same
configuration, so that growth from trial to trial is memory kept, not a bigger model.

    python -m benchmarks.trial_memory [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.common import add_results_dir
from spaces import cnn, mlp

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


PARAMS = {"mlp": mlp.DEFAULTS}
PARAMS["cnn"] = {
    **cnn.DEFAULTS, "filters": 32, "kernel_size": 3, "dense_units": 128, "l2": 1e-4,
    "dropout": 0.25, "learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam",
}  # fmt: skip


def child(trials: int, cleanup: bool, images: int, arch: str) -> None:
    """One study in this process; prints the RSS after each trial as JSON."""
    from pathlib import Path

    import optuna

    import runners.training
    from runners.data import load_fashion_mnist, split_train_val
    from search.engines.optuna_pool import run_study
    from search.run.workers import resident_mib
    from search.storage.rdb import create_or_load_study, open_storage
    from search.tracking import Tracker

    if not cleanup:
        runners.training.free_memory = lambda: None
    data = load_fashion_mnist()
    split = split_train_val(data.x_train, data.y_train, val_size=images, subset=images)
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        study = create_or_load_study(
            storage=open_storage(f"sqlite:///{tmp}/o.db"),
            study_name="memory",
            arch=arch,
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=optuna.pruners.NopPruner(),
        )
        for _ in range(trials):
            study.enqueue_trial(PARAMS[arch], skip_if_exists=False)
        run_study(
            study=study,
            arch=arch,
            split=split,
            tracker=Tracker(tracking_uri=f"sqlite:///{tmp}/m.db", artifact_root=Path(tmp) / "a"),
            n_trials=trials,
            max_epochs=1,
            seed=0,
            callbacks=[lambda s, t: rss.append(resident_mib())],
        )
    print(json.dumps(rss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 mlp trials on 200 images")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    add_results_dir(parser)
    args = parser.parse_args()
    trials = 2 if args.quick else args.trials
    images = 200 if args.quick else 1000
    arch = "mlp" if args.quick else "cnn"
    if args.child:
        child(trials, args.child == "on", images, arch)
        return
    series = {}
    for mode in ("on", "off"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.trial_memory", "--child", mode,
             "--trials", str(trials), *(["--quick"] if args.quick else [])],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        series[mode] = json.loads(out.strip().splitlines()[-1])
    from benchmarks.common import write

    def growth(values: list[float]) -> float:
        tail = values[len(values) // 4 :]
        return (tail[-1] - tail[0]) / max(len(tail) - 1, 1)

    lines = [
        f"Resident memory (MiB) of one process running {trials} identical `{arch}` trials (1 epoch "
        f"on {images:,} images, each logged to MLflow), after trials 1, half-way and last; "
        "growth per trial over the last three quarters.",
        "",
        "| per-trial cleanup | after trial 1 | half-way | last | growth per trial |",
        "|---|---|---|---|---|",
    ]
    for mode, label in (("on", "on (fmsearch)"), ("off", "off")):
        v = series[mode]
        lines.append(
            f"| {label} | {v[0]:.0f} | {v[len(v) // 2]:.0f} | {v[-1]:.0f} | {growth(v):+.1f} |"
        )
    path = write(
        "trial_memory_quick" if args.quick else "trial_memory",
        {"trials": trials, "rss_mib": series},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
