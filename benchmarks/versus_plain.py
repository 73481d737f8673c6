"""Searching against not searching: a planned search's champion beside a plain CNN trained for
the same wall clock on the same kind of core.

Two processes start together, each pinned to its own core (``taskset``) with one TensorFlow
thread: ``fmsearch run --arch ARCH --budget-hours H --threads 1`` in a fresh directory, and
the plain Keras CNN a user would write without fmsearch (``spaces.cnn``'s published 3-conv
network, Adam's defaults, batch 64, cross-entropy on the integer labels) trained on the same
50,000 training images epoch after epoch while the next epoch still ends within the budget,
judged on the 10,000 test images with its last weights. Recorded: both test accuracies, the
plain CNN's epochs, how long the search took against its budget and what it served.

    python -m benchmarks.versus_plain --hours 0.25 [--arch auto] [--seed 0] [--workdir DIR]
    python -m benchmarks.versus_plain --quick

Every run is added to ``versus_plain.json`` (labelled by architecture, budget and seed);
``versus_plain.md`` gives each budget's runs side by side, by host class.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.budget_plan import QUICK_DATA, QUICK_HOURS, read_planned_run
from benchmarks.common import (
    STORE_VARIABLES,
    add_results_dir,
    machine,
    study_in,
    workdir_in,
    write,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 75 s on 900 images")
    parser.add_argument("--arch", default="auto", help="fmsearch run's --arch (default auto)")
    parser.add_argument("--hours", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the search's stores here")
    parser.add_argument(
        "--plain", type=float, metavar="SECONDS", help=argparse.SUPPRESS
    )  # the plain CNN's own process: train for SECONDS, print its result as JSON
    parser.add_argument("--subset", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--val-size", type=int, default=10_000, help=argparse.SUPPRESS)
    add_results_dir(parser)
    args = parser.parse_args()
    if args.plain is not None:
        result = plain_cnn(
            seconds=args.plain, subset=args.subset, val_size=args.val_size, seed=args.seed
        )
        print(json.dumps(result))
        return
    data: list[str] = []
    if args.quick:
        args.arch, args.hours, data = "mlp", QUICK_HOURS, list(QUICK_DATA)
    budget = args.hours * 3600
    search = [
        "run", "--arch", args.arch, "--budget-hours", f"{args.hours:.6g}", "--threads", "1",
        "--seed", str(args.seed), *data,
    ]  # fmt: skip
    plain = ["--plain", f"{budget:.0f}", "--seed", str(args.seed)]
    plain += ["--subset", data[1], "--val-size", data[3]] if data else []
    with contextlib.ExitStack() as stack:
        # Kept, the search's MLflow runs show why its champion ended where it did.
        workdir = workdir_in(stack, args.workdir)
        started = time.perf_counter()
        log = workdir / "fmsearch.log"
        searching = _start([sys.executable, "-m", "search", *search], core=0, cwd=workdir, log=log)
        training = _start([sys.executable, "-m", "benchmarks.versus_plain", *plain], core=1)
        plain_out, _ = training.communicate()
        plain_result = json.loads(plain_out.strip().splitlines()[-1])
        searching.wait()
        wall = time.perf_counter() - started
        if searching.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"fmsearch {' '.join(search)} exited {searching.returncode}:\n{tail}")
        searched = read_planned_run(
            workdir, study_in(workdir), arch=args.arch, hours=args.hours, wall=wall
        )
        searched["printed"] = _printed(log)
    payload = {
        "arch": args.arch,
        "hours": args.hours,
        "seed": args.seed,
        "command": "fmsearch " + " ".join(search),
        "search": searched,
        "plain": plain_result,
    }
    label = f"--arch {args.arch}, {args.hours:g} h, seed {args.seed}"
    name = "versus_plain_quick" if args.quick else "versus_plain"
    table = _table([{**payload, "machine": machine()}])
    path = write(name, payload, table, directory=args.results_dir, label=label, summary=summary)
    print(path.read_text())


def _start(
    command: list[str], *, core: int, cwd: Path | None = None, log: Path | None = None
) -> subprocess.Popen:
    """``command`` started on CPU ``core`` alone (where this host has it), out of the stores
    the environment names, with one TensorFlow thread; what it writes goes to ``log`` (None:
    its output is read from a pipe, its errors shown here)."""
    pin = ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() > core else []
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARIABLES}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    if log is None:
        return subprocess.Popen([*pin, *command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
    with log.open("w") as out:  # the child keeps its own copy of the file
        return subprocess.Popen([*pin, *command], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _printed(log: Path) -> list[str]:
    """What ``fmsearch run`` told its user: its log lines (the choice, the plan, the trials,
    the finals, what was kept) and the last lines it printed (the outcome, the champion)."""
    lines = log.read_text(errors="replace").splitlines()
    logged = [line for line in lines if re.match(r"\d\d:\d\d:\d\d ", line)]
    return logged + lines[-3:]


def plain_cnn(*, seconds: float, subset: int | None, val_size: int, seed: int) -> dict:
    """The plain CNN trained while the next epoch still ends within ``seconds`` (of this
    process's start of training), then its test accuracy with its last weights."""
    import keras

    from runners.data import load_fashion_mnist, split_train_val
    from runners.training import set_threads
    from spaces import cnn

    set_threads(1)
    started = time.monotonic()
    data = load_fashion_mnist(download=False)
    split = split_train_val(data.x_train, data.y_train, val_size=val_size, subset=subset)
    keras.utils.set_random_seed(seed)
    model = cnn.build(cnn.DEFAULTS)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    class UntilTheBudget(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs, self.last = 0, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs, now = epoch + 1, time.monotonic()
            self.last = now - self.began
            if now + self.last > started + seconds:
                self.model.stop_training = True

    until = UntilTheBudget()
    model.fit(split.x_train, split.y_train, batch_size=64, epochs=10_000, callbacks=[until],
              verbose=0)  # fmt: skip
    _, accuracy = model.evaluate(data.x_test[..., None], data.y_test, verbose=0)
    return {
        "test_accuracy": float(accuracy),
        "epochs": until.epochs,
        "seconds": time.monotonic() - started,
        "train_images": len(split.x_train),
    }


def _table(history: list[dict]) -> str:
    lines = [
        "| budget | host | `--arch` | seed | searched: family, kept | took (of budget) "
        "| search's champion | plain CNN | plain epochs | difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in history:
        s, p = r["search"], r["plain"]
        over = s["actual_seconds"] / s["budget_seconds"] - 1
        lines.append(
            f"| {r['hours'] * 60:.0f} min | {r['machine']['precision']} | {r['arch']} "
            f"| {r['seed']} | {s['family'] or 'not recorded'}, {s['kept']} "
            f"| {s['actual_seconds'] / 60:.1f} min ({over:+.1%}) "
            f"| {s['test_accuracy']:.2%} | {p['test_accuracy']:.2%} | {p['epochs']} "
            f"| {100 * (s['test_accuracy'] - p['test_accuracy']):+.2f} points |"
        )
    return "\n".join(lines)


def summary(history: list[dict]) -> str:
    """The median of each budget, host class and ``--arch`` over its seeds; then every run."""
    latest = {(r["hours"], r["machine"]["precision"], r["arch"], r["seed"]): r for r in history}
    groups: dict[tuple, list[dict]] = {}
    for (hours, precision, arch, _), r in sorted(latest.items()):
        groups.setdefault((hours, precision, arch), []).append(r)
    medians = [
        "| budget | host | `--arch` | runs (seeds) | search's champion, median (range) "
        "| plain CNN, median | difference, median (range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (hours, precision, arch), group in sorted(groups.items()):
        searched = [r["search"]["test_accuracy"] for r in group]
        plain = [r["plain"]["test_accuracy"] for r in group]
        diffs = [100 * (s - p) for s, p in zip(searched, plain, strict=True)]
        seeds = ", ".join(str(r["seed"]) for r in group)
        medians.append(
            f"| {hours * 60:.0f} min | {precision} | {arch} | {len(group)} ({seeds}) "
            f"| {statistics.median(searched):.2%} ({min(searched):.2%}-{max(searched):.2%}) "
            f"| {statistics.median(plain):.2%} | {statistics.median(diffs):+.2f} points "
            f"({min(diffs):+.2f} to {max(diffs):+.2f}) |"
        )
    ordered = sorted(history, key=lambda r: (r["hours"], r["machine"]["precision"], r["arch"],
                                              r["seed"]))  # fmt: skip
    return "\n".join(
        [
            "Each run: one `fmsearch run` and one plain CNN started together, one core each, "
            "for the same budget (`precision` tells the host class: float32 on hosts without "
            "AVX512-BF16 or AMX). The medians count each seed once, its latest run.",
            "",
            *medians,
            "",
            "Every run:",
            "",
            _table(ordered),
        ]
    )


if __name__ == "__main__":
    main()
