"""Load test of the study storage: 4 workers x 200 cheap trials (no training) on one study.

Runs on fmsearch's default local store (SQLite, serialised transactions, heartbeats on) and
on PostgreSQL, through fmsearch's own storage (trial pool, heartbeats) and Optuna's
``study.optimize``. Checks that no trial is lost or run twice and that no worker sees
"database is locked"; reports trials per second.

    python -m benchmarks.storage_load            # 4 x 200 on each store
    python -m benchmarks.storage_load --quick    # 2 x 10
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import add_results_dir, write

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def worker(url: str, out: Path) -> None:
    """One worker process: run trials from the pool until it is empty; record what it ran."""
    import optuna

    from search.storage.rdb import PoolEmpty, open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    locked = []

    class _Locked(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "database is locked" in record.getMessage():
                locked.append(record.getMessage())

    logging.getLogger().addHandler(_Locked())
    study = optuna.load_study(
        study_name="load",
        storage=open_storage(url),
        sampler=optuna.samplers.RandomSampler(),
    )
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        x = trial.suggest_float("x", -10, 10)
        trial.report(x, 0)
        return x * x

    errors = []
    try:
        study.optimize(objective)
    except PoolEmpty:
        pass
    except Exception as exc:
        errors.append(repr(exc))
        locked += [repr(exc)] if "database is locked" in repr(exc) else []
    out.write_text(json.dumps({"ran": ran, "locked": len(locked), "errors": errors}))


def measure(url: str, *, workers: int, per_worker: int, tmp: Path) -> dict:
    import optuna

    from search.engines.optuna_pool import add_budget
    from search.storage.rdb import open_storage

    study = optuna.create_study(study_name="load", storage=open_storage(url))
    total = workers * per_worker
    add_budget(study, total)
    outs = [tmp / f"w{i}-{uuid.uuid4().hex[:6]}.json" for i in range(workers)]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.storage_load", "--worker", url, "--out", str(o)]
        )
        for o in outs
    ]
    codes = [p.wait() for p in processes]
    seconds = time.perf_counter() - start
    results = [json.loads(o.read_text()) for o in outs]
    ran = [n for r in results for n in r["ran"]]
    trials = optuna.load_study(study_name="load", storage=url).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    return {
        "workers": workers,
        "trials": total,
        "exit_codes": codes,
        "seconds": round(seconds, 2),
        "trials_per_second": round(len(finished) / seconds, 1),
        "finished": len(finished),
        "lost": total - len(set(ran)),
        "duplicated": len(ran) - len(set(ran)),
        "extra_trials": len(trials) - total,
        "locked_errors": sum(r["locked"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
    }


def postgres_url() -> str:
    import psycopg

    name = f"fmsearch_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 x 10 trials")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials-per-worker", type=int, default=200)
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    add_results_dir(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out)
        return
    per_worker = 10 if args.quick else args.trials_per_worker
    args.workers = 2 if args.quick else args.workers
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["sqlite (default local store)"] = measure(
            f"sqlite:///{tmp}/optuna.db", workers=args.workers, per_worker=per_worker,
            tmp=Path(tmp),
        )  # fmt: skip
        url = postgres_url()
        try:
            rows["postgresql"] = measure(url, workers=args.workers, per_worker=per_worker,
                                         tmp=Path(tmp))  # fmt: skip
        finally:
            drop(url)
    lines = [
        f"{args.workers} worker processes share one study of {args.workers * per_worker} "
        "trials with a cheap objective (no training): fmsearch's storage (trial pool, "
        "heartbeats every 10 s) under Optuna's `study.optimize`, random sampler.",
        "",
        "| store | trials/s | wall time | finished | lost | duplicated | extra | "
        "'database is locked' |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for store, r in rows.items():
        lines.append(
            f"| {store} | {r['trials_per_second']} | {r['seconds']:.1f} s | {r['finished']} | "
            f"{r['lost']} | {r['duplicated']} | {r['extra_trials']} | {r['locked_errors']} |"
        )
    path = write(
        "storage_load_quick" if args.quick else "storage_load",
        {"workers": args.workers, "trials_per_worker": per_worker, "stores": rows},
        "\n".join(lines),
        directory=args.results_dir,
    )
    print(path.read_text())
    bad = {s: r for s, r in rows.items()
           if r["lost"] or r["duplicated"] or r["extra_trials"] or r["locked_errors"]
           or r["errors"] or any(r["exit_codes"])}  # fmt: skip
    if bad:
        raise SystemExit(f"storage load test failed: {json.dumps(bad)}")


if __name__ == "__main__":
    main()
