"""Trial speed: images/s of fmsearch's training loop against a bare ``model.fit``.

For each architecture and dtype policy, the same model (same published configuration, same
seed) trains on the same images twice in this process: once with a bare
``model.fit(x, y, validation_data=...)`` on NumPy arrays, once through
``runners.training.fit_trial`` (fmsearch's tf.data input pipeline, per-epoch reporting,
pruning, NaN and deadline checks, best-weight keeping). An epoch's time includes its
validation pass in both. The first epoch traces the graph and is left out; the rest give
the median epoch time. Overhead: fmsearch's median epoch time over the bare one, minus 1
(the target is at most 5%).

    python -m benchmarks.trial_speed [--quick] [--arch mlp --arch cnn] [--images 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import optuna

from benchmarks.common import add_results_dir, write
from runners.data import NUM_CLASSES, load_fashion_mnist, split_train_val
from runners.precision import cpu_flags, dtype_policy, resolve_policy
from runners.training import _EVAL_BATCH, fit_trial, free_memory, make_optimizer, seed_everything
from spaces import ARCHITECTURES

POLICIES = ("float32", "mixed_bfloat16")


class _Silent:
    """A reporter that keeps the epoch times and never prunes."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.seconds.append(metrics["epoch_seconds"])


class EpochTimer(keras.callbacks.Callback):
    """Each epoch's wall-clock seconds, in ``seconds`` (benchmarks.probe_accuracy uses it too)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _params(arch: str) -> dict:
    space = ARCHITECTURES[arch]
    return space.suggest(optuna.trial.FixedTrial(dict(space.DEFAULTS)))


def bare_fit(arch: str, policy: str, split, *, epochs: int) -> list[float]:
    """Epoch times of a plain ``compile`` + ``fit`` on NumPy arrays, as a Keras user writes it."""
    params = _params(arch)
    seed_everything(0)
    with dtype_policy(policy):
        model = ARCHITECTURES[arch].build(params)
    steps = int(np.ceil(len(split.x_train) / params["batch_size"]))
    model.compile(
        optimizer=make_optimizer(params, total_steps=steps * epochs),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)
    model.fit(
        split.x_train.astype(np.float32),
        onehot[split.y_train],
        batch_size=params["batch_size"],
        epochs=epochs,
        validation_data=(split.x_val.astype(np.float32), onehot[split.y_val]),
        validation_batch_size=_EVAL_BATCH,
        callbacks=[timer],
        verbose=0,
    )
    free_memory()
    return timer.seconds


def fmsearch_fit(arch: str, policy: str, split, *, epochs: int) -> list[float]:
    """Epoch times of the same model through fmsearch's trial loop."""
    params = _params(arch)
    seed_everything(0)
    with dtype_policy(policy):
        model = ARCHITECTURES[arch].build(params)
    reporter = _Silent()
    fit_trial(model, params, split, max_epochs=epochs, reporter=reporter, patience=None)
    free_memory()
    return reporter.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 2,000 images, 3 epochs")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHITECTURES))
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each loop")
    add_results_dir(parser)
    args = parser.parse_args()
    archs = args.arch or ["mlp", "cnn", "vggbn"]
    if args.quick:
        archs, args.images, args.epochs, args.repeats = ["mlp"], 2000, 3, 1
    data = load_fashion_mnist()
    split = split_train_val(data.x_train, data.y_train, val_size=2000, subset=args.images)
    rows = {}
    for arch in archs:
        for policy in POLICIES:
            times: dict[str, list[float]] = {"bare": [], "fmsearch": []}
            # Alternate the two loops so that a slow spell of a shared machine hits both.
            for _ in range(args.repeats):
                times["bare"] += bare_fit(arch, policy, split, epochs=args.epochs)[1:]
                times["fmsearch"] += fmsearch_fit(arch, policy, split, epochs=args.epochs)[1:]
            bare, ours = (statistics.median(times[k]) for k in ("bare", "fmsearch"))
            rows[f"{arch}/{policy}"] = {
                "arch": arch,
                "policy": policy,
                "epoch_seconds": times,
                "bare_images_per_s": args.images / bare,
                "fmsearch_images_per_s": args.images / ours,
                "overhead": ours / bare - 1,
            }
            print(arch, policy, f"bare {bare:.2f} s, fmsearch {ours:.2f} s per epoch")
    for arch in archs:
        fp32 = rows[f"{arch}/float32"]["fmsearch_images_per_s"]
        rows[f"{arch}/mixed_bfloat16"]["speedup_over_float32"] = (
            rows[f"{arch}/mixed_bfloat16"]["fmsearch_images_per_s"] / fp32
        )
    flags = cpu_flags()
    native = sorted(flags & {"amx_bf16", "avx512_bf16"}) or ["none"]
    lines = [
        f"Images/s of one epoch (training on {args.images:,} images plus validation on 2,000), "
        f"median of epochs 2-{args.epochs} over {args.repeats} alternating run(s) of each loop; "
        f"published configuration of each architecture. bfloat16 instructions of this CPU: "
        f"{', '.join(native)}; `--precision auto` picks `{resolve_policy('auto')}` here.",
        "",
        "| arch | dtype policy | bare `model.fit` | fmsearch `fit_trial` | overhead "
        "| mixed vs float32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        speedup = r.get("speedup_over_float32")
        lines.append(
            f"| `{r['arch']}` | {r['policy']} | {r['bare_images_per_s']:,.0f} "
            f"| {r['fmsearch_images_per_s']:,.0f} | {r['overhead']:+.1%} "
            f"| {f'{speedup:.2f}x' if speedup else '-'} |"
        )
    payload = {"images": args.images, "epochs": args.epochs, "results": rows}
    path = write(
        "trial_speed_quick" if args.quick else "trial_speed",
        payload,
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
