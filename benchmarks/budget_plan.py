"""Budgeted searches end to end: the plan's estimate against what the command took, and what
it found.

Each ``ARCH:HOURS`` runs ``fmsearch run --arch ARCH --budget-hours HOURS`` in a fresh directory
(in this process), then reads the plan, the parent run's timing and the champion back.

With ``--final-on-all-data`` every run trains its chosen model again with the validation
images and promotes that (the quick variant does, so that the suite runs that path too).

    python -m benchmarks.budget_plan [--quick] [--runs mlp:0.1,cnn:0.2] [--final-on-all-data]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import add_results_dir, fmsearch_here, write

# --quick: mlp for 75 s on 900 training and 300 validation images (champion_run's quick run too).
QUICK_HOURS = 75 / 3600
QUICK_DATA = ["--subset", "900", "--val-size", "300"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 75 s on 900 images")
    parser.add_argument("--runs", default="mlp:0.1,cnn:0.2", help="ARCH:HOURS,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final-on-all-data", action="store_true")
    parser.add_argument(
        "--workdir", type=Path, help="Keep each run's stores in DIR/ARCH (default: temporary "
        "directories, removed afterwards)",
    )  # fmt: skip
    add_results_dir(parser)
    args = parser.parse_args()
    runs = [(a, float(h)) for a, h in (spec.split(":") for spec in args.runs.split(","))]
    extra: list[str] = []
    if args.quick:
        runs, extra = [("mlp", QUICK_HOURS)], list(QUICK_DATA)
        args.final_on_all_data = True
    extra += ["--final-on-all-data"] if args.final_on_all_data else []
    rows = []
    for arch, hours in runs:
        command = ["run", "--arch", arch, "--budget-hours", f"{hours:.6f}", "--seed",
                   str(args.seed), "-q", *extra]  # fmt: skip
        with contextlib.ExitStack() as stack:
            if args.workdir:
                workdir = args.workdir / arch
            else:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            wall, study = fmsearch_here(command, cwd=workdir)
            rows.append(read_planned_run(workdir, study, arch=arch, hours=hours, wall=wall))
    table = "\n".join(
        [
            "`fmsearch run --arch ARCH --budget-hours H` (all 50,000 training images, 10,000 "
            "validation, the champion judged on the 10,000 test images), alone on the machine.",
            "",
            "| arch | budget | estimated | took | error | rungs (images x epochs: configurations) "
            "| finals | kept | retrained with validation | test accuracy |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['arch']} | {r['budget_seconds']:.0f} s | {r['estimated_seconds']:.0f} s "
                f"| {r['actual_seconds']:.0f} s | {r['error']:+.1%} | {r['rungs']} "
                f"| {r['finals']} x {r['final_epochs']} epochs | {r['kept']} "
                f"| {r['retrained'] if args.final_on_all_data else 'not asked'} "
                f"| {r['test_accuracy']:.4f} |"
                for r in rows
            ),
        ]
    )
    name = "budget_plan_quick" if args.quick else "budget_plan"
    path = write(name, {"runs": rows}, table, directory=args.results_dir)
    print(path.read_text())


def read_planned_run(
    directory: Path, study, *, arch: str, hours: float, wall: float | None
) -> dict:
    """What a planned run in ``directory`` estimated, took, kept and reached on the test set
    (``wall``: the command's wall time where it was measured here)."""
    from mlflow import MlflowClient

    from search.budget.finals import stored_plan
    from search.names import (
        ARCH_TAG,
        DISTILL_TAG,
        ENSEMBLE_ATTR,
        FINAL_ATTR,
        FINAL_ON_ALL_DATA_TAG,
        SOURCE_TRIAL_TAG,
        STANDS_IN_ATTR,
    )
    from search.promotion.promote import model_name_for

    plan = stored_plan(study)
    client = MlflowClient(f"sqlite:///{directory}/mlruns/mlflow.db")
    champion = client.get_model_version_by_alias(model_name_for(arch), "champion")
    champion_trial = int(champion.tags[SOURCE_TRIAL_TAG])
    parent = parent_run(client, study.study_name)
    metrics = parent.data.metrics
    decision = client.download_artifacts(parent.info.run_id, "ensemble.json", str(directory))
    ensemble = json.loads(Path(decision).read_text())
    chosen = ensemble["chosen"]
    return {
        "arch": arch,
        "parent_run_id": parent.info.run_id,
        "budget_seconds": hours * 3600,
        "wall_seconds": wall,
        "estimated_seconds": metrics["plan_estimated_seconds"],
        "actual_seconds": metrics["plan_actual_seconds"],
        "error": metrics["plan_error"],
        "rungs": " / ".join(f"{r.train_images}x{r.epochs}: {r.configs}" for r in plan.rungs),
        "rungs_run": _rungs_run(study, n_rungs=len(plan.rungs)),
        "trials": len(study.trials),
        "finals": sum(bool(t.user_attrs.get(FINAL_ATTR)) for t in study.trials),
        # Models trained again with the validation images (--final-on-all-data), and whether
        # the champion is one of them (or their ensemble).
        "retrained": sum(
            STANDS_IN_ATTR in t.user_attrs and ENSEMBLE_ATTR not in t.user_attrs
            for t in study.trials
        ),
        "final_on_all_data": parent.data.tags.get(FINAL_ON_ALL_DATA_TAG),
        "champion_stands_in": STANDS_IN_ATTR in study.trials[champion_trial].user_attrs,
        "champion_trial": champion_trial,
        # The architecture searched (the one --arch auto chose), and what distillation decided.
        "family": parent.data.tags[ARCH_TAG],
        "distill": parent.data.tags.get(DISTILL_TAG),
        "final_epochs": plan.final_epochs,
        "kept": _kept(chosen),
        "ensemble": ensemble,
        "test_accuracy": float(champion.tags["test_accuracy"]),
    }


def _rungs_run(study, *, n_rungs: int) -> str:
    """Trials the ladder started on each rung, to read beside the plan's counts: promotions
    are asynchronous (ASHA), so the upper rungs may take more than their share of them."""
    from search.names import RUNG_ATTR

    started = [t.user_attrs[RUNG_ATTR] for t in study.trials
               if t.datetime_start is not None and RUNG_ATTR in t.user_attrs]  # fmt: skip
    return " / ".join(str(started.count(rung)) for rung in range(n_rungs))


def _kept(chosen: dict) -> str:
    size = len(chosen["members"])
    return ("one model" if size == 1 else f"ensemble of {size}") + (
        " + flip TTA" if chosen["tta"] else ""
    )


def parent_run(client, study_name: str):
    """The study's parent MLflow run (in the experiment named after the study)."""
    experiment = client.get_experiment_by_name(study_name)
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`fmsearch.role` = 'study'"
    )
    return run


if __name__ == "__main__":
    main()
