"""What logging one trial to MLflow costs beyond training.

For each architecture, trains a small real model, then logs it the way a trial does
(params, per-epoch curves, validation evaluation with confusion-matrix PNG/JSON and
classification report, the Keras model) into a fresh local SQLite store, several times, and
times each part. Prediction on the validation set is timed separately: it is measurement,
not logging.

    python -m benchmarks.tracking_overhead [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import optuna

from benchmarks.common import add_results_dir, write
from runners.data import CLASS_NAMES, load_fashion_mnist, split_train_val
from runners.metrics import evaluate_predictions, predict_classes
from search.kinds import RUNNERS
from search.tracking import Tracker
from spaces import ARCHITECTURES

SHARED = {"l2": 1e-5, "dropout": 0.1, "learning_rate": 1e-3, "batch_size": 128, "optimizer": "adam"}
PARAMS = {
    "mlp": {"n_units_l0": 256, "n_units_l1": 128},
    "cnn": {"filters": 32, "kernel_size": 3, "dense_units": 128},
    "resnet": {"base_filters": 32, "n_stages": 3, "n_blocks": 2, "dense_units": 128},
}
PARTS = ("run_and_params", "epoch_metrics", "evaluation_artifacts", "keras_model", "end_run")


def measure(arch: str, *, repeats: int, epochs: int, split, tracker: Tracker) -> dict:
    space = ARCHITECTURES[arch]
    params = space.suggest(optuna.trial.FixedTrial({**space.DEFAULTS, **PARAMS[arch], **SHARED}))
    model = space.build(params)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(split.x_train, split.y_train, epochs=1, batch_size=128, verbose=0)
    experiment = tracker.experiment_id(f"bench-{arch}")
    parent = tracker.start_study_run(
        experiment_id=experiment, study_name=f"bench-{arch}", arch=arch, params={}
    )
    rows = []
    for i in range(repeats):
        t = {}
        start = time.perf_counter()
        run_id = tracker.start_trial_run(
            experiment_id=experiment, parent_run_id=parent, study_name=f"bench-{arch}",
            arch=arch, trial_number=i, params=params,
        )  # fmt: skip
        t["run_and_params"] = time.perf_counter() - start
        start = time.perf_counter()
        for epoch in range(epochs):
            tracker.log_epoch(
                run_id, epoch, {"train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.5,
                                "val_accuracy": 0.8, "epoch_seconds": 1.0},
            )  # fmt: skip
        t["epoch_metrics"] = time.perf_counter() - start
        start = time.perf_counter()
        predicted = predict_classes(model, split.x_val)
        evaluation = evaluate_predictions(split.y_val, predicted, class_names=CLASS_NAMES)
        t["predict_validation"] = time.perf_counter() - start
        start = time.perf_counter()
        tracker.log_metrics(run_id, {"best_val_accuracy": evaluation.accuracy, "n_params": 1})
        tracker.log_evaluation(run_id, evaluation, class_names=CLASS_NAMES, split="val")
        t["evaluation_artifacts"] = time.perf_counter() - start
        start = time.perf_counter()
        RUNNERS["keras"].log_model(tracker, run_id, model)
        t["keras_model"] = time.perf_counter() - start
        start = time.perf_counter()
        tracker.end_trial_run(run_id, state="COMPLETE")
        t["end_run"] = time.perf_counter() - start
        t["logging_total"] = sum(t[p] for p in PARTS)
        rows.append(t)
    steady = rows[1:] or rows
    return {
        "arch": arch,
        "n_params": model.count_params(),
        "first_trial": rows[0],
        "median": {k: statistics.median(r[k] for r in steady) for k in rows[0]},
        "max": {k: max(r[k] for r in steady) for k in rows[0]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, mlp only")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10, help="per-epoch metric rows logged")
    add_results_dir(parser)
    args = parser.parse_args()
    archs = ["mlp"] if args.quick else list(PARAMS)
    repeats = 2 if args.quick else args.repeats
    data = load_fashion_mnist()
    split = split_train_val(data.x_train, data.y_train, val_size=10_000, subset=2_000)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=Path(tmp) / "a")
        results = [
            measure(a, repeats=repeats, epochs=args.epochs, split=split, tracker=tracker)
            for a in archs
        ]
    lines = [
        f"Per-trial MLflow logging into a local SQLite store ({args.epochs} epochs of curves, "
        f"10,000 validation images), median of {repeats - 1 if repeats > 1 else 1} trials after a "
        "first warm-up trial, seconds.",
        "",
        "| arch | params | run + params | epoch curves | evaluation PNG/JSON/report | Keras model "
        "| end run | **logging total** (max) | first trial total | predict validation |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, x = r["median"], r["max"]
        lines.append(
            f"| {r['arch']} | {r['n_params']:,} | {m['run_and_params']:.3f} | "
            f"{m['epoch_metrics']:.3f} | {m['evaluation_artifacts']:.3f} | "
            f"{m['keras_model']:.3f} | {m['end_run']:.3f} | **{m['logging_total']:.2f}** "
            f"({x['logging_total']:.2f}) | {r['first_trial']['logging_total']:.2f} | "
            f"{m['predict_validation']:.2f} |"
        )
    path = write(
        "tracking_overhead_quick" if args.quick else "tracking_overhead",
        {"repeats": repeats, "epochs": args.epochs, "results": results},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
