"""`make run`'s first search against the plain model it should replace.

The plain model: a Keras MLP (Dense 256-128 ReLU, Adam's defaults, batch 64), trained on the
same 10,000 stratified training images for the same 5 epochs and judged on the same 10,000
test images. The search: ``fmsearch run`` with the Makefile's ``RUN_ARGS``, in a fresh
directory, its champion's test accuracy read from the registry. Both run ``--runs`` times.

    python -m benchmarks.first_run [--quick] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import add_results_dir, fmsearch_here, write

# The Makefile's RUN_ARGS, what `make run` searches.
RUN_ARGS = ["--arch", "mlp", "--trials", "10", "--subset", "10000", "--max-epochs", "5"]


def plain_mlp(*, subset: int, epochs: int, val_size: int, seed: int) -> float:
    """Test accuracy of the plain Keras MLP trained on ``subset`` images."""
    import keras

    from runners.data import load_fashion_mnist, split_train_val

    data = load_fashion_mnist()
    split = split_train_val(data.x_train, data.y_train, val_size=val_size, subset=subset)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(split.x_train, split.y_train, batch_size=64, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(data.x_test[..., None], data.y_test, verbose=0)
    keras.backend.clear_session()
    return float(accuracy)


def champion_accuracy(directory: Path) -> float:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{directory}/mlruns/mlflow.db")
    return float(
        client.get_model_version_by_alias("fmsearch-mlp", "champion").tags["test_accuracy"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials on 1,000 images, 1 run")
    parser.add_argument("--runs", type=int, default=2)
    add_results_dir(parser)
    args = parser.parse_args()
    run_args = list(RUN_ARGS)
    subset, epochs, val_size = 10_000, 5, 10_000
    if args.quick:
        args.runs, subset, epochs, val_size = 1, 1000, 2, 1000
        run_args = ["--arch", "mlp", "--trials", "2", "--subset", "1000", "--max-epochs", "2"]
        run_args += ["--val-size", "1000"]
    baseline, searched, walls = [], [], []
    for seed in range(args.runs):
        baseline.append(plain_mlp(subset=subset, epochs=epochs, val_size=val_size, seed=seed))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            fmsearch_here(["run", *run_args, "--quiet"], cwd=Path(tmp))
            walls.append(time.perf_counter() - start)
            searched.append(champion_accuracy(Path(tmp)))
    payload = {
        "command": "fmsearch run " + " ".join(run_args),
        "plain_mlp_test_accuracy": baseline,
        "search_test_accuracy": searched,
        "search_wall_seconds": walls,
    }
    table = "\n".join(
        [
            f"`{payload['command']}` against a plain Keras MLP (256-128 ReLU, Adam's defaults, "
            f"batch 64) on the same {subset:,} training images for {epochs} epochs; test accuracy "
            f"on the 10,000 test images, {args.runs} run(s) each.",
            "",
            "| | test accuracy (each run) | mean | wall time |",
            "|---|---|---|---|",
            f"| plain MLP | {', '.join(f'{a:.4f}' for a in baseline)} "
            f"| {statistics.mean(baseline):.4f} | |",
            f"| fmsearch run | {', '.join(f'{a:.4f}' for a in searched)} "
            f"| {statistics.mean(searched):.4f} | {statistics.mean(walls):.0f} s |",
        ]
    )
    name = "first_run_quick" if args.quick else "first_run"
    path = write(name, payload, table, directory=args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
