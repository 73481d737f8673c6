"""Should a final train with flips whatever its configuration chose? One final, both ways.

The champion runs' finals train the configuration the ladder chose at five epochs, and flip
test-time augmentation is kept only when it wins on validation. A configuration that never
saw a mirrored image gains nothing from it (the seed-2 two-hour run: 0.9445 on validation,
0.9423 with flip TTA), while the best champion's configuration trained with
flips and gained 0.26 points. This benchmark trains one ladder configuration from a champion
run's record as a final is trained (a one-cycle schedule over all 50,000 images, no pruning,
the best epoch kept) twice, as chosen and with random horizontal flips added, and judges
each on validation and on the test images, plain and with flip TTA.

    python -m benchmarks.final_flips [--quick] [--source champion_run.json]
        [--run "2 h, seed 2"] [--trial 38] [--epochs 30] [--variant "as chosen"] [--seed 0]
        [--workdir DIR]

Each training is one ``fmsearch run --trials 1`` with every hyperparameter fixed, in a
directory of its own, so each is a tracked, promoted study a user can open in MLflow.

Every answer measured so far is in ``benchmarks/results/final_flips.json``, labelled by the
run, trial, length and seed it trained; ``final_flips.md`` shows the latest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import (
    RESULTS,
    add_results_dir,
    find_run,
    fmsearch_here,
    workdir_in,
    write,
)
from runners.data import FashionMNIST, load_fashion_mnist
from search.budget.ladder import final_params

VARIANTS = {"as chosen": None, "with flips": True}
# The best configuration of the seed-2 champion run's ladder (trial numbers repeat across runs).
DEFAULT_SOURCE = RESULTS / "champion_run.json"
DEFAULT_RUN = "2 h, seed 2"
DEFAULT_TRIAL = 38
DEFAULT_EPOCHS = 30
# --quick: the smallest training that still exercises both variants end to end.
QUICK_DATA = ("--subset", "300", "--val-size", "300")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on 300 images at quarter width"
    )  # fmt: skip
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE,
        help="The champion runs' results (each run's ladder record holds its configurations)",
    )  # fmt: skip
    parser.add_argument(
        "--run", default=DEFAULT_RUN, help="The label of the champion run whose trial is trained"
    )  # fmt: skip
    parser.add_argument(
        "--trial", type=int, default=DEFAULT_TRIAL,
        help="The ladder trial whose configuration is trained (default: the seed-2 run's best)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument(
        "--variant", action="append", choices=list(VARIANTS),
        help="Train only this variant (repeatable; default: both)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, help="Keep the studies' stores here (default: a temporary "
        "directory, removed afterwards)",
    )  # fmt: skip
    add_results_dir(parser)
    args = parser.parse_args()
    record = find_run(args.source.stem, args.run, directory=args.source.parent)["result"]
    (trained,) = [t for t in record["ladder"]["trials"] if t["number"] == args.trial]
    params = final_params(trained["params"])
    extra: list[str] = []
    if args.quick:
        args.epochs, params["width"], extra = 1, 0.25, list(QUICK_DATA)
    data = load_fashion_mnist()
    rows = []
    with contextlib.ExitStack() as stack:
        workdir = workdir_in(stack, args.workdir)
        for variant in args.variant or VARIANTS:
            flip = VARIANTS[variant]
            fixed = {**params, "flip": params["flip"] if flip is None else flip}
            command = [
                "run", "--arch", record["arch"], "--trials", "1", "--no-enqueue", "--pruner",
                "none", "--max-epochs", str(args.epochs), "--patience", "0", "--seed",
                str(args.seed), "-q", *extra,
                *[option for k, v in fixed.items() for option in ("--fix", f"{k}={v}")],
            ]  # fmt: skip
            cwd = workdir / variant.replace(" ", "-")
            wall, study = fmsearch_here(command, cwd=cwd)
            rows.append(
                {
                    "variant": variant,
                    "flip": fixed["flip"],
                    "wall_seconds": wall,
                    **judged(study, cwd=cwd, data=data),
                }
            )
    lines = [
        f"Trial {args.trial} of the champion run '{args.run}' ({record['command']}), trained as "
        f"a final ({args.epochs} one-cycle epochs on all training images, the best epoch kept, "
        f"seed {args.seed}), "
        + " and ".join(r["variant"] for r in rows).replace(
            "with flips", "with random horizontal flips"
        )
        + ":",
        "",
        "| variant | flips | best epoch | val accuracy | val, flip TTA | test accuracy "
        "| test, flip TTA | took |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['variant']} | {'yes' if r['flip'] else 'no'} | {r['best_epoch']} "
            f"| {r['val_accuracy']:.4f} | {r['val_accuracy_tta']:.4f} "
            f"| {r['test_accuracy']:.4f} | {r['test_accuracy_tta']:.4f} "
            f"| {r['wall_seconds'] / 60:.1f} min |"
            for r in rows
        ),
    ]
    path = write(
        "final_flips_quick" if args.quick else "final_flips",
        {
            "source": args.source.name,
            "run": args.run,
            "trial": args.trial,
            "epochs": args.epochs,
            "seed": args.seed,
            "params": params,
            "rows": rows,
        },
        "\n".join(lines),
        directory=args.results_dir,
        label=f"trial {args.trial} of {args.run}: {args.epochs} epochs, seed {args.seed}"
        + ("" if args.variant else ", both variants"),
    )
    print(path.read_text())


def judged(study, *, cwd: Path, data: FashionMNIST) -> dict:
    """The study's one model on ``data``'s validation and test images, plain and with flip
    TTA, and its per-epoch validation curve."""
    from runners.ensemble import average, view_probabilities
    from search.names import MODEL_URI_TAG, RUN_ID_ATTR, SETTINGS_ATTR
    from search.run.workers import SearchSettings
    from search.tracking import Tracker

    trial = study.best_trial
    tracker = Tracker(tracking_uri=f"sqlite:///{cwd.resolve()}/mlruns/mlflow.db")
    model = tracker.load_keras_model(tracker.run_tags(trial.user_attrs[RUN_ID_ATTR])[MODEL_URI_TAG])
    split = SearchSettings(**study.user_attrs[SETTINGS_ATTR]).split(data)

    def accuracies(images, labels) -> tuple[float, float]:
        plain, mirrored = view_probabilities(
            lambda x: model.predict(x, batch_size=512, verbose=0), images
        )
        return tuple(
            float((p.argmax(axis=1) == labels).mean()) for p in (plain, average([plain, mirrored]))
        )

    val, val_tta = accuracies(split.x_val, split.y_val)
    # The split's images carry a channel axis; the test images come as the files hold them.
    test, test_tta = accuracies(data.x_test[..., None], data.y_test)
    curve = dict(sorted(trial.intermediate_values.items()))
    return {
        "trained_params": trial.params,
        "trial_value": trial.value,
        "epochs": len(curve),
        "best_epoch": max(curve, key=lambda e: (curve[e], -e)) + 1,
        "curve": curve,
        "val_accuracy": val,
        "val_accuracy_tta": val_tta,
        "test_accuracy": test,
        "test_accuracy_tta": test_tta,
    }


if __name__ == "__main__":
    main()
