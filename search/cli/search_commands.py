"""``fmsearch worker``, ``studies``, ``promote`` and ``report``: what follows a search."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from search.cli.options import (
    STARTED_AT_ENV,
    Finite,
    budget_option,
    data_dir_option,
    echo_promotion,
    heartbeat_option,
    max_latency_option,
    max_params_option,
    quiet_option,
    register_as_option,
    setup_logging,
    storage_option,
    study_name_option,
    threads_option,
    timeout_option,
    tracking_option,
    verbose_option,
)
from search.storage.urls import redact

logger = logging.getLogger(__name__)


@click.command()
@study_name_option(help="The study to work on (made by `fmsearch run`).")
@storage_option
@tracking_option
@data_dir_option
@threads_option
@heartbeat_option
@timeout_option
@budget_option
@click.option(
    "--wait",
    type=Finite(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the study to be created.",
)
@click.option(
    "--max-trials-per-process",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    metavar="N",
    help="Start again as a new process after N trials, freeing what the old one kept (0: never).",
)
@click.option(
    "--max-memory-mib",
    type=Finite(min=0),
    default=0,
    metavar="MIB",
    help="Start again as a new process after a trial that leaves it this large (0: never).",
)
@click.option("--worker-index", type=click.IntRange(min=0), default=0, hidden=True)
# When the first process of this worker started: a worker started again keeps its time limit.
@click.option("--started-at", type=float, envvar=STARTED_AT_ENV, hidden=True)
@quiet_option
@verbose_option
def worker(
    study_name,
    storage,
    tracking_uri,
    data_dir,
    threads,
    heartbeat_interval,
    timeout,
    budget_hours,
    wait,
    max_trials_per_process,
    max_memory_mib,
    worker_index,
    started_at,
    quiet,
    verbose,
) -> None:
    """Run trials of an existing study until its budget is spent, then exit.

    Start as many as you like, on any host that reaches the study's storage and the MLflow
    tracking store; each trial runs once. Ctrl-C stops a worker cleanly (its trial fails);
    a killed worker's trial is run again by another worker. Every --max-trials-per-process
    trials (or past --max-memory-mib) the worker starts again as a new process, the same
    command with the same process id, so that a long study does not grow it without bound.

    \b
    Example:
      fmsearch worker --study-name resnet --storage postgresql://optuna@db/optuna
    """

    setup_logging(quiet=quiet, verbose=verbose)
    from search import api

    started_at = time.time() if started_at is None else started_at
    result = api.work(
        study_name=study_name, storage=storage, tracking_uri=tracking_uri, data_dir=data_dir,
        threads=threads, heartbeat_interval=heartbeat_interval, timeout=timeout,
        budget_hours=budget_hours, wait=wait, max_trials_per_process=max_trials_per_process,
        max_memory_mib=max_memory_mib, worker_index=worker_index, started_at=started_at,
    )  # fmt: skip
    click.echo(result.outcome.describe())
    if result.restart_reason is not None:
        _start_again(result.restart_reason, started_at=started_at)


def _start_again(reason: str, *, started_at: float) -> None:
    """Replace this worker process with a new one running the same command (``exec``: same
    process id, so whatever supervises it sees one worker throughout)."""
    from search.run.workers import worker_command

    if sys.argv[1:2] != ["worker"]:
        # Called in-process (a test's CliRunner): there is no command line to start again.
        logger.warning("worker stopped after %s; not started from a command line", reason)
        return
    logger.warning("worker starts again as a new process after %s", reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [*worker_command(), *sys.argv[1:]],
        {**os.environ, STARTED_AT_ENV: repr(started_at)},
    )


@click.command()
@storage_option
@study_name_option(required=False, help="Only this study.")
def studies(storage, study_name) -> None:
    """List the studies in a storage: trials waiting/running/complete/pruned/failed, best."""
    setup_logging(quiet=True)
    from search import api
    from search.names import ARCH_ATTR
    from search.storage.urls import default_storage

    found = api.studies(storage=storage, study_name=study_name)
    click.echo(f"storage {redact(storage or default_storage())}: {len(found)} studies")
    header = ("study", "arch", "waiting", "running", "complete", "pruned", "failed", "best")
    click.echo("\t".join(header))
    for study, o in found:
        best = f"{o.best_value:.4f} (trial {o.best_trial})" if o.best_trial is not None else "-"
        row = (study.study_name, study.user_attrs.get(ARCH_ATTR, "?"), o.n_waiting,
               o.n_running, o.n_complete, o.n_pruned, o.n_failed, best)  # fmt: skip
        click.echo("\t".join(map(str, row)))


@click.command()
@study_name_option(help="The study whose best trial to promote.")
@storage_option
@tracking_option
@data_dir_option
@register_as_option
@max_params_option
@max_latency_option
@quiet_option
@verbose_option
def promote(
    study_name,
    storage,
    tracking_uri,
    data_dir,
    register_as,
    max_params,
    max_latency_ms,
    quiet,
    verbose,
) -> None:
    """Judge a study's best trial on the test set and register it.

    It becomes the `champion` alias only if it beats the current champion's test accuracy;
    otherwise it is the `challenger`. The decision is recorded on the model version.
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api

    promotion = api.promote(study_name=study_name, storage=storage, tracking_uri=tracking_uri,
                            data_dir=data_dir, register_as=register_as, max_params=max_params,
                            max_latency_ms=max_latency_ms)  # fmt: skip
    echo_promotion(promotion)


@click.command()
@study_name_option(help="The study to report on.")
@storage_option
@tracking_option
@register_as_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the report as one HTML file here.  [default: report-STUDY.html]",
)
@quiet_option
@verbose_option
def report(study_name, storage, tracking_uri, register_as, output, quiet, verbose) -> None:
    """Draw a study's report and attach it to its MLflow parent run.

    Optimization history, hyperparameter importances, parallel coordinates, intermediate
    values, trials per worker, the Pareto front (multi-objective), the best 10 trials, the
    epochs pruning saved and the champion's test result; also one self-contained HTML file.
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api

    output = output or Path(f"report-{study_name}.html")
    result = api.report(study_name=study_name, storage=storage, tracking_uri=tracking_uri,
                        register_as=register_as, output=output)  # fmt: skip
    counts = ", ".join(f"{n} {state.lower()}" for state, n in result.counts.items())
    click.echo(f"study {study_name}: {counts}; {result.epochs_saved} epochs saved by pruning")
    click.echo(f"report: {output} and the parent run's artifacts under report/")


COMMANDS = (worker, studies, promote, report)
