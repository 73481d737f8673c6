"""Every architecture searched at one fixed budget on this machine: best validation and test.

For each architecture, ``fmsearch run`` starts from the architecture's published
configuration (``--enqueue``) and searches with the default TPE sampler and Hyperband pruner
until the time budget is spent (``--timeout``: no trial starts after it), then the champion is
judged on the 10,000 test images.

    python -m benchmarks.architectures [--quick] [--budget-minutes 4] [--arch cnn --arch knn]

``--update`` re-measures the given architectures and keeps the other rows of the last run
(each row says when it was measured).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import add_results_dir, fmsearch_here, machine, runs, write
from benchmarks.short_search import summarize
from spaces import ARCHITECTURES

# Test accuracies that Fashion-MNIST projects publish for models of each kind.
PUBLISHED = {
    "mlp": "about 88%",
    "cnn": "90-91% (small CNN)",
    "minicnn": "90-91% (small CNN)",
    "resnet": "91.5-93%",
    "vggbn": "94.9% (with augmentation)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="logreg, 5 s, 500 images each (a smoke test)"
    )
    parser.add_argument("--arch", action="append", choices=sorted(ARCHITECTURES))
    parser.add_argument("--budget-minutes", type=float, default=4.0)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--val-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update", action="store_true", help="keep the other rows")
    add_results_dir(parser)
    args = parser.parse_args()
    archs = args.arch or list(ARCHITECTURES)
    if args.quick:
        archs, args.budget_minutes, args.subset, args.max_epochs = ["logreg"], 1 / 12, 500, 2
        args.val_size = 500
    name = "architectures_quick" if args.quick else "architectures"
    earlier = runs(name, directory=args.results_dir)
    rows = dict(earlier[-1]["results"]) if args.update and earlier else {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            command = [
                "fmsearch", "run", "--arch", arch, "--trials", "1000", "--enqueue",
                "--timeout", f"{args.budget_minutes * 60:g}", "--subset", str(args.subset),
                "--val-size", str(args.val_size),
                "--max-epochs", str(args.max_epochs), "--seed", str(args.seed), "-q",
            ]  # fmt: skip
            wall, _ = fmsearch_here(command[1:], cwd=Path(tmp) / arch)
            rows[arch] = summarize(Path(tmp) / arch, arch, " ".join(command), wall)
            rows[arch]["measured"] = machine()["date"]
            print(arch, {k: rows[arch][k] for k in ("best_val_accuracy", "test_accuracy")})
    lines = [
        f"Each architecture searched for {args.budget_minutes:.2g} min (no trial starts later; "
        f"the one running finishes) on {args.subset:,} training images, at most "
        f"{args.max_epochs} epochs per trial (scikit-learn: 4 growing data shares), "
        f"{args.val_size:,} validation images, TPE + Hyperband, starting from the published "
        "configuration (`--enqueue`), seed "
        f"{args.seed}. Test accuracy: the champion on the 10,000 test images.",
        "",
        "| arch | trials (complete / pruned / failed) | wall time | best val accuracy "
        "| test accuracy | macro F1 | published | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in [a for a in ARCHITECTURES if a in rows]:
        r = rows[arch]
        lines.append(
            f"| `{arch}` | {r['complete']} / {r['pruned']} / {r['failed']} "
            f"| {r['wall_seconds'] / 60:.1f} min | {r['best_val_accuracy']:.4f} "
            f"| {r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} "
            f"| {PUBLISHED.get(arch, '-')} | {r.get('measured', '-')} |"
        )
    payload = {"budget_minutes": args.budget_minutes, "subset": args.subset, "results": rows}
    path = write(name, payload, "\n".join(lines), directory=args.results_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
