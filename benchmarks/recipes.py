"""Every source recipe trained as published: test accuracy and loss beside the published ones.

Each recipe runs ``fmsearch reproduce RECIPE`` (in this process, in a fresh directory): all
50,000 training images, 10,000 validation images, the recipe's epochs and early stopping,
judged on the 10,000 test images. A recipe whose training would not fit its share of the time
is time-boxed (``--time-box``, recorded), and the table says so.

    python -m benchmarks.recipes [--quick] [--hours 2] [--recipes a,b,...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import add_results_dir, workdir_in, write

# The quick variant: one scikit-learn recipe on a few hundred images (no TensorFlow).
QUICK_RECIPES = ("knn-pca",)
QUICK_DATA = {"subset": 300, "val_size": 200}


def main() -> None:
    from spaces.recipes import RECIPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="knn-pca on 300 images")
    parser.add_argument("--hours", type=float, default=2.0, help="time for all the recipes")
    parser.add_argument("--recipes", help="comma-separated names (default: all)")
    parser.add_argument("--workdir", type=Path, help="keep the stores here (default: removed)")
    parser.add_argument("--seed", type=int, default=0)
    add_results_dir(parser)
    args = parser.parse_args()
    names = (QUICK_RECIPES if args.quick
             else tuple(args.recipes.split(",")) if args.recipes else tuple(RECIPES))  # fmt: skip
    data = QUICK_DATA if args.quick else {}
    deadline = time.time() + args.hours * 3600
    rows = []
    with contextlib.ExitStack() as stack:
        workdir = workdir_in(stack, args.workdir)
        for i, name in enumerate(names):
            # The time left, shared evenly by the recipes still to train.
            share = max(deadline - time.time(), 60.0) / (len(names) - i) / 3600
            rows.append(_reproduce(name, workdir=workdir / name, time_box_hours=share,
                                   seed=args.seed, **data))  # fmt: skip
    table = [
        "`fmsearch reproduce RECIPE` for each source recipe"
        + (f" on {QUICK_DATA['subset']} training images (quick)" if args.quick else
           ", all 50,000 training images, judged on the 10,000 test images")
        + f"; {args.hours:g} h for all of them, shared evenly (a recipe that needs longer is "
        "time-boxed).",
        "",
        "| recipe | arch | published accuracy | obtained | published loss | obtained loss "
        "| epochs trained | minutes | fmsearch's choices where the source is silent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        table.append(
            f"| `{r['recipe']}` | {r['arch']} | {_pct(r['published_accuracy'])} "
            f"| {_pct(r['test_accuracy'])} | {_num(r['published_loss'])} "
            f"| {_num(r['test_loss'])} | {_epochs(r)} | {r['seconds'] / 60:.1f} | {r['note']} |"
        )
    path = write(
        "recipes_quick" if args.quick else "recipes",
        {"hours": args.hours, "recipes": rows},
        "\n".join(table),
        directory=args.results_dir,
    )
    print(path.read_text())


def _reproduce(name: str, *, workdir: Path, **options) -> dict:
    from search.recipes.reproduce import reproduce

    stores = workdir.resolve() / "mlruns"
    stores.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(workdir):
        return reproduce(
            name, storage=f"sqlite:///{stores}/optuna.db",
            tracking_uri=f"sqlite:///{stores}/mlflow.db", quiet=True, **options,
        ).as_dict()  # fmt: skip


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _epochs(row: dict) -> str:
    if row["epochs"] is None:
        return "-"
    boxed = " (time-boxed)" if row["time_boxed"] else ""
    return f"{row['epochs']} of {row['planned_epochs']}{boxed}"


if __name__ == "__main__":
    main()
