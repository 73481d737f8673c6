"""The study report: what a search did, in pictures and tables, as one self-contained HTML file.

Drawn from the Optuna storage alone (Optuna's own matplotlib plots, plus a timeline of trials
per worker), so it can be refreshed at any time, by any process: when a study ends and by
``fmsearch report``. The champion's test result comes from the MLflow registry.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.errors import FmsearchError
from search.names import (
    BASELINE_TAG,
    EPOCHS_ATTR,
    OBJECTIVES_ATTR,
    SETTINGS_ATTR,
    SOURCE_TRIAL_TAG,
    STUDY_TAG,
    TEST_ACCURACY_TAG,
    TEST_MACRO_F1_TAG,
    WORKER_ATTR,
)
from search.outcome import retried_numbers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from search.tracking import Tracker

logger = logging.getLogger(__name__)

BEST_N = 10
REPORT_FOLDER = "report"


@dataclass(frozen=True)
class StudyReport:
    """A study's report.

    Attributes:
        study_name: The study.
        counts: Trials per state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``,
            ``WAITING``); retried trials count once, as their retry.
        epochs_trained: Epochs all trials trained.
        epochs_saved: Epochs pruned trials would have trained had they run to the maximum.
        max_epochs: The most epochs a trial may train.
        best: Up to ten best completed trials, best first, as table rows.
        champion: The champion's registry record, if the study's model has one.
        figures: Plots by artifact name.
        skipped: Plots left out, with why (too few trials for importances, say).
        families: In a study over several architectures, one row per family: trials,
            completed, best validation accuracy, median seconds per trial.
    """

    study_name: str
    counts: dict[str, int]
    epochs_trained: int
    epochs_saved: int
    max_epochs: int
    best: list[dict[str, Any]]
    champion: dict[str, Any] | None
    figures: dict[str, Figure] = field(repr=False)
    skipped: dict[str, str]
    families: list[dict[str, Any]] = field(default_factory=list)

    @functools.cached_property
    def pngs(self) -> dict[str, bytes]:
        """Each figure as PNG, drawn once for both the page and the artifacts."""
        rendered = {}
        for key, figure in self.figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            rendered[key] = buffer.getvalue()
        return rendered

    def html(self) -> str:
        """The report as one HTML page, pictures inlined: it opens anywhere, offline."""
        from search.insight.report_html import render_html

        return render_html(self, best_n=BEST_N)

    def best_csv(self) -> str:
        import csv

        buffer = io.StringIO()
        columns = list(self.best[0]) if self.best else ["trial"]
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.best)
        return buffer.getvalue()

    def summary(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "counts": self.counts,
            "epochs_trained": self.epochs_trained,
            "epochs_saved_by_pruning": self.epochs_saved,
            "max_epochs": self.max_epochs,
            "best": self.best,
            "champion": self.champion,
            "skipped_plots": self.skipped,
            "families": self.families,
        }


def build_report(study: optuna.Study, *, champion: Mapping[str, Any] | None = None) -> StudyReport:
    """Draw and tabulate ``study``.

    Args:
        study: Any fmsearch study (single- or multi-objective, finished or running).
        champion: The champion's record (``version``, ``test_accuracy``, ...), if any.
    """
    trials = _counted(study.get_trials(deepcopy=False))
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    settings = study.user_attrs.get(SETTINGS_ATTR, {})
    trained = [int(t.user_attrs.get(EPOCHS_ATTR, len(t.intermediate_values))) for t in trials]
    max_epochs = int(settings.get("max_epochs") or max(trained, default=0))
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    objectives = study.user_attrs.get(OBJECTIVES_ATTR, ["accuracy"])
    figures, skipped = _figures(study, trials, objectives=objectives)
    return StudyReport(
        study_name=study.study_name,
        counts={k: v for k, v in counts.items() if v},
        epochs_trained=sum(trained),
        epochs_saved=sum(max_epochs - len(t.intermediate_values) for t in pruned),
        max_epochs=max_epochs,
        best=_best_rows(trials, objectives=objectives),
        champion=dict(champion) if champion else None,
        figures=figures,
        skipped=skipped,
        families=_family_rows(trials),
    )


def _family_rows(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Accuracy and time per architecture, for a study over several (``--arch a,b``)."""
    from statistics import median

    from spaces.families import FAMILY_PARAM

    by_family: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if FAMILY_PARAM in trial.params and trial.state.is_finished():
            by_family.setdefault(trial.params[FAMILY_PARAM], []).append(trial)
    rows = []
    for family, members in sorted(by_family.items()):
        done = [t for t in members if t.state == TrialState.COMPLETE]
        seconds = [t.duration.total_seconds() for t in members if t.duration is not None]
        rows.append(
            {
                "family": family,
                "trials": len(members),
                "complete": len(done),
                "best_val_accuracy": round(max((t.values[0] for t in done), default=math.nan), 4),
                "median_trial_seconds": round(median(seconds), 1) if seconds else None,
            }
        )
    return sorted(rows, key=lambda r: -(r["best_val_accuracy"] or 0))


def _counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials a retry replaced count once, as the retry."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried]


def _best_rows(trials: list[FrozenTrial], *, objectives: list[str]) -> list[dict[str, Any]]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    complete.sort(key=lambda t: (-t.values[0], t.number))
    rows = []
    for trial in complete[:BEST_N]:
        row: dict[str, Any] = {"trial": trial.number, "val_accuracy": round(trial.values[0], 4)}
        for name, value in zip(objectives[1:], trial.values[1:], strict=False):
            row[name] = value
        row["epochs"] = trial.user_attrs.get(EPOCHS_ATTR, len(trial.intermediate_values))
        if trial.duration is not None:
            row["seconds"] = round(trial.duration.total_seconds(), 1)
        row.update(trial.params)
        rows.append(row)
    return rows


def _figures(
    study: optuna.Study, trials: list[FrozenTrial], *, objectives: list[str]
) -> tuple[dict[str, Figure], dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # Optuna's plots go through pyplot; no window, ever
    from optuna.visualization import matplotlib as plots

    multi = len(objectives) > 1
    accuracy = {"target": lambda t: t.values[0], "target_name": "val_accuracy"} if multi else {}
    wanted = {
        "optimization_history": lambda: plots.plot_optimization_history(study, **accuracy),
        "param_importances": lambda: plots.plot_param_importances(study, **accuracy),
        "parallel_coordinate": lambda: plots.plot_parallel_coordinate(study, **accuracy),
        "intermediate_values": lambda: plots.plot_intermediate_values(study),
    }
    if multi:
        wanted["pareto_front"] = lambda: plots.plot_pareto_front(
            study, target_names=[o if o != "accuracy" else "val_accuracy" for o in objectives]
        )
    figures: dict[str, Figure] = {}
    skipped: dict[str, str] = {}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for name, draw in wanted.items():
        if name == "param_importances" and len(complete) < 2:
            skipped[name] = f"needs 2 completed trials, got {len(complete)}"
            continue
        if name == "intermediate_values" and not any(t.intermediate_values for t in trials):
            skipped[name] = "no trial reported an epoch"
            continue
        try:
            # Optuna's plots switch pyplot to the ggplot style for the whole process.
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore")  # "experimental", "too few trials"
                figures[name] = _detached(draw())
        except Exception as exc:  # a plot Optuna cannot draw for this study
            skipped[name] = f"{type(exc).__name__}: {exc}"
    if any(t.datetime_start for t in trials):
        figures["timeline_per_worker"] = timeline_per_worker(trials, title=study.study_name)
    else:
        skipped["timeline_per_worker"] = "no trial has started"
    return figures, skipped


def _detached(result: Any) -> Figure:
    """The figure behind Optuna's axes, released from pyplot's registry (which would keep every
    figure of a long-lived process alive)."""
    import matplotlib.pyplot as plt

    axes = result.ravel()[0] if hasattr(result, "ravel") else result
    figure = axes.get_figure()
    figure.set_size_inches(10, 5.5)
    plt.close(figure)
    return figure


_STATE_COLORS = {
    TrialState.COMPLETE: "tab:blue",
    TrialState.PRUNED: "tab:orange",
    TrialState.FAIL: "tab:red",
    TrialState.RUNNING: "tab:green",
}


def timeline_per_worker(trials: list[FrozenTrial], *, title: str) -> Figure:
    """One row per worker (``host:pid``), one bar per trial it ran, coloured by outcome."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    started = [t for t in trials if t.datetime_start is not None]
    workers = sorted({str(t.user_attrs.get(WORKER_ATTR, "unknown")) for t in started})
    now = datetime.now()
    origin = min(t.datetime_start for t in started)
    fig = Figure(figsize=(11, 1.0 + 0.45 * len(workers)), layout="constrained")
    ax = fig.add_subplot()
    for row, worker in enumerate(workers):
        for trial in started:
            if str(trial.user_attrs.get(WORKER_ATTR, "unknown")) != worker:
                continue
            end = trial.datetime_complete or now
            left = (trial.datetime_start - origin).total_seconds() / 60
            width = max((end - trial.datetime_start).total_seconds() / 60, 1e-3)
            ax.barh(row, width, left=left, color=_STATE_COLORS.get(trial.state, "0.5"),
                    edgecolor="white", height=0.7)  # fmt: skip
    ax.set_yticks(range(len(workers)), workers, fontsize=8)
    ax.set_xlabel("minutes since the first trial started")
    ax.set_title(f"{title}: trials per worker")
    ax.legend(
        handles=[Patch(color=c, label=s.name.lower()) for s, c in _STATE_COLORS.items()],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    return fig


def publish_report(
    *, study: optuna.Study, tracker: Tracker, model_name: str, html_path: Path | None = None
) -> StudyReport:
    """Build the report and attach it to the study's parent run, under ``report/``.

    Args:
        study: The study.
        tracker: The MLflow store the study was tracked in.
        model_name: The registered model whose champion the report names.
        html_path: Also write the HTML page here.

    Raises:
        FmsearchError: The study has no parent run in ``tracker``.
    """
    import tempfile

    parent_run_id = tracker.study_run_id(study.study_name)
    if parent_run_id is None:
        raise FmsearchError(
            f"study {study.study_name!r} has no parent run in {tracker.tracking_uri}: "
            "expected the tracking store the study ran with"
        )
    version = tracker.version_by_alias(model_name, "champion")
    champion = None
    if version is not None:
        champion = {
            "model_name": model_name,
            "version": version.version,
            "trial": version.tags.get(SOURCE_TRIAL_TAG),
            "study": version.tags.get(STUDY_TAG),
            "test_accuracy": float(version.tags.get(TEST_ACCURACY_TAG, "nan")),
            "test_macro_f1": float(version.tags.get(TEST_MACRO_F1_TAG, "nan")),
            "confusion": _json_tag(version.tags, "test_confusion_matrix"),
            "baseline": _json_tag(version.tags, BASELINE_TAG),
        }
    report = build_report(study, champion=champion)
    page = report.html()
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for name, text in (("report.html", page), ("best_trials.csv", report.best_csv())):
            path = Path(folder) / name
            path.write_text(text, encoding="utf-8")
            files.append(path)
        for key, png in report.pngs.items():
            path = Path(folder) / f"{key}.png"
            path.write_bytes(png)
            files.append(path)
        tracker.log_files(parent_run_id, files, folder=REPORT_FOLDER)
    tracker.log_json(parent_run_id, report.summary(), f"{REPORT_FOLDER}/summary.json")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(page, encoding="utf-8")
    return report


def _json_tag(tags: Mapping[str, str], key: str) -> Any:
    """A version tag holding JSON, parsed (None: absent)."""
    import json

    return json.loads(tags[key]) if key in tags else None
