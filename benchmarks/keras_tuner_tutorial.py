"""Keras Tuner's own Fashion-MNIST tutorial against a budgeted fmsearch run, one core each.

The tutorial (tensorflow.org/tutorials/keras/keras_tuner), as published: Hyperband
(max_epochs 10, factor 3) over a one-layer MLP (32-512 units, learning rate 1e-2/1e-3/1e-4),
early stopping on val_loss (patience 5), then the best configuration trained for 50 epochs to
find its best epoch and trained again for that many, judged on the 10,000 test images. Beside
it, at the same time on the other core: ``fmsearch run --arch mlp --budget-hours`` the
tutorial's wall time (measured before, ``--seconds``), its champion judged on the same images.

    python -m benchmarks.keras_tuner_tutorial [--quick] [--seconds 985]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.budget_plan import QUICK_HOURS
from benchmarks.common import add_results_dir, write

TUTORIAL = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras, keras_tuner as kt
from runners.data import load_fashion_mnist
quick, directory = sys.argv[1] == "1", sys.argv[2]
data = load_fashion_mnist()
img_train, label_train = data.x_train / 255.0, data.y_train
img_test, label_test = data.x_test / 255.0, data.y_test
if quick:
    img_train, label_train = img_train[:2000], label_train[:2000]
max_epochs, epochs = (2, 3) if quick else (10, 50)
start = time.perf_counter()

def model_builder(hp):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()])
    model.add(keras.layers.Dense(hp.Int("units", min_value=32, max_value=512, step=32),
                                 activation="relu"))
    model.add(keras.layers.Dense(10))
    model.compile(optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-2, 1e-3, 1e-4])),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model

tuner = kt.Hyperband(model_builder, objective="val_accuracy", max_epochs=max_epochs, factor=3,
                     directory=directory, project_name="intro_to_kt")
stop_early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
tuner.search(img_train, label_train, epochs=epochs, validation_split=0.2, callbacks=[stop_early],
             verbose=0)
best_hps = tuner.get_best_hyperparameters(num_trials=1)[0]
model = tuner.hypermodel.build(best_hps)
history = model.fit(img_train, label_train, epochs=epochs, validation_split=0.2, verbose=0)
val_acc_per_epoch = history.history["val_accuracy"]
best_epoch = val_acc_per_epoch.index(max(val_acc_per_epoch)) + 1
hypermodel = tuner.hypermodel.build(best_hps)
hypermodel.fit(img_train, label_train, epochs=best_epoch, validation_split=0.2, verbose=0)
_, accuracy = hypermodel.evaluate(img_test, label_test, verbose=0)
print(json.dumps({"test_accuracy": accuracy, "seconds": time.perf_counter() - start,
                  "units": best_hps.get("units"), "learning_rate": best_hps.get("learning_rate"),
                  "best_epoch": best_epoch}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images, a 60 s budget")
    parser.add_argument(
        "--seconds", type=float, default=985.0, help="fmsearch's budget: the tutorial's time"
    )
    add_results_dir(parser)
    args = parser.parse_args()
    # Quick: 75 s (budget_plan's quick budget), since set-up took 39 s of a 60 s budget
    # beside a suite on three workers.
    seconds = QUICK_HOURS * 3600 if args.quick else args.seconds
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FMSEARCH_STORAGE"):
        env.pop(key, None)
    fmsearch = [sys.executable, "-m", "search", "run", "--arch", "mlp", "--budget-hours",
                f"{seconds / 3600:.6f}", "--threads", "1", "--seed", "0", "-q"]  # fmt: skip
    if args.quick:
        fmsearch += ["--subset", "2000", "--val-size", "1000"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(__file__).resolve().parent.parent
        tutorial = subprocess.Popen(
            [sys.executable, "-c", TUTORIAL, "1" if args.quick else "0", f"{tmp}/kt"],
            cwd=repo, env={**env, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        start = time.perf_counter()
        ours = subprocess.run(fmsearch, cwd=tmp, env=env, capture_output=True, text=True)
        ours_seconds = time.perf_counter() - start
        out, _ = tutorial.communicate()
        if ours.returncode != 0 or tutorial.returncode != 0:
            raise RuntimeError(f"a run failed: fmsearch {ours.returncode}: {ours.stderr[-2000:]}")
        kt_result = json.loads(out.strip().splitlines()[-1])
        ours_accuracy = _champion(Path(tmp))
    payload = {
        "budget_seconds": seconds,
        "tutorial": kt_result,
        "fmsearch": {"command": "fmsearch " + " ".join(fmsearch[3:]), "seconds": ours_seconds,
                     "test_accuracy": ours_accuracy},
    }  # fmt: skip
    table = "\n".join(
        [
            "Keras Tuner's Fashion-MNIST tutorial and `fmsearch run --arch mlp --budget-hours "
            f"{seconds / 3600:.3f}` ({seconds:.0f} s), side by side, one core each; test "
            "accuracy on the 10,000 test images.",
            "",
            "| | wall time | test accuracy | chosen |",
            "|---|---|---|---|",
            f"| Keras Tuner tutorial | {kt_result['seconds']:.0f} s "
            f"| {kt_result['test_accuracy']:.4f} | {kt_result['units']} units, learning rate "
            f"{kt_result['learning_rate']:g}, {kt_result['best_epoch']} epochs |",
            f"| fmsearch (budgeted plan) | {ours_seconds:.0f} s | {ours_accuracy:.4f} | "
            "its champion |",
        ]
    )
    name = "keras_tuner_tutorial_quick" if args.quick else "keras_tuner_tutorial"
    path = write(name, payload, table, directory=args.results_dir)
    print(path.read_text())


def _champion(directory: Path) -> float:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{directory}/mlruns/mlflow.db")
    champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")
    return float(champion.tags["test_accuracy"])


if __name__ == "__main__":
    main()
