"""One model to serve: a planned search's winning ensemble against the single model distilled
from it, on validation accuracy, latency per image and size.

Runs ``fmsearch run --arch A --budget-hours H`` in a fresh directory (finals, their ensemble
decision, the distillation when an ensemble wins, promotion) and reads back ``distill.json``
from the study's parent run and the champion from the registry.

    python -m benchmarks.distillation [--quick] [--arch mlp] [--hours 0.25] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.budget_plan import QUICK_DATA, read_planned_run
from benchmarks.common import add_results_dir, fmsearch_here, write

# Three finals on 900 images: enough time for an ensemble and its student.
QUICK_HOURS = 150 / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mlp, 150 s on 900 images")
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--hours", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    add_results_dir(parser)
    args = parser.parse_args()
    data = list(QUICK_DATA) if args.quick else []
    if args.quick:
        args.arch, args.hours = "mlp", QUICK_HOURS
    command = [
        "run", "--arch", args.arch, "--budget-hours", f"{args.hours:.6g}", "--seed",
        str(args.seed), "-q", *data,
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        wall, study = fmsearch_here(command, cwd=workdir)
        result = read_planned_run(workdir, study, arch=args.arch, hours=args.hours, wall=wall)
        result["distillation"] = _distillation(workdir, run_id=result["parent_run_id"])
    payload = {"arch": args.arch, "hours": args.hours, "seed": args.seed,
               "command": "fmsearch " + " ".join(command), "result": result}  # fmt: skip
    name = "distillation_quick" if args.quick else "distillation"
    path = write(name, payload, _table(payload), directory=args.results_dir,
                 label=f"{args.arch}, {args.hours:g} h, seed {args.seed}")  # fmt: skip
    print(path.read_text())


def _distillation(workdir: Path, *, run_id: str) -> dict | None:
    """The parent run's ``distill.json`` (None: no ensemble won, nothing was distilled)."""
    from mlflow import MlflowClient

    from search.budget.distill import DISTILL_FILE

    client = MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    if DISTILL_FILE not in {f.path for f in client.list_artifacts(run_id)}:
        return None
    path = client.download_artifacts(run_id, DISTILL_FILE, str(workdir))
    return json.loads(Path(path).read_text())


def _table(payload: dict) -> str:
    r = payload["result"]
    d = r["distillation"]
    head = (
        f"`{payload['command']}`: {r['finals']} finals; on validation {r['kept']} "
        f"won; champion {r['test_accuracy']:.2%} on the 10,000 test images."
    )
    options = ["| what the finals made | val accuracy | kept on validation |", "|---|---|---|"]
    chosen = r["ensemble"]["chosen"]
    for o in r["ensemble"]["options"]:
        members = ", ".join(map(str, o["members"])) + (" with flip TTA" if o["tta"] else "")
        trials = "trials" if len(o["members"]) > 1 else "trial"
        kept = "yes" if o == chosen else ""
        options.append(f"| {trials} {members} | {o['val_accuracy']:.4f} | {kept} |")
    if d is None:
        return "\n".join(
            [head, "", *options, "", "No ensemble won on validation: nothing was distilled."]
        )
    lines = [head, "", *options, "",
             "| model | val accuracy | latency (ms per image) | parameters | served |",
             "|---|---|---|---|---|"]  # fmt: skip
    names = (f"ensemble (trial {d['ensemble']})", f"distilled (trial {d['student']})")
    served = (not d["kept"], d["kept"])
    for i, name in enumerate(names):
        acc, latency, params = d["val_accuracy"][i], d["latency_ms"][i], d["n_params"][i]
        lines.append(
            f"| {name} | {'-' if acc is None else f'{acc:.4f}'} "
            f"| {'-' if latency is None else f'{latency:.4f}'} "
            f"| {'-' if params is None else f'{params:,}'} | {'yes' if served[i] else 'no'} |"
        )
    return "\n".join([*lines, "", f"Decision: {d['reason']}."])


if __name__ == "__main__":
    main()
