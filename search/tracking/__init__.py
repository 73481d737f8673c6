"""Every MLflow call fmsearch makes (but the served model's own loader): one package, by run
id. Runs, metrics and artifacts here; logged and served models in ``models``; reading runs
back in ``queries``; the model registry in ``registry``; a trial's record kept through a
tracking outage in ``trial_log``.

MLflow's fluent API keeps a global active run and is not thread-safe, so fmsearch talks to
MLflow through an ``MlflowClient`` and explicit run ids. The one global it sets is the tracking
URI, because ``Model.log`` resolves it.

Layout in MLflow: one experiment per study; in it one parent run per study (tag
``fmsearch.role=study``), one nested run per trial (``fmsearch.role=trial``) and one per
promotion (``fmsearch.role=promotion``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from runners.errors import FmsearchError
from search.names import (
    ARCH_TAG,
    FLAVOR_TAG,
    MEMBERS_TAG,
    MODEL_URI_TAG,
    PARENT_TAG,
    REASON_TAG,
    REFIT_TAG,
    ROLE_TAG,
    RUN_ID_ATTR,
    RUNG_TAG,
    STANDS_IN_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    TTA_TAG,
)
from search.storage.urls import redact
from search.tracking.models import Models
from search.tracking.queries import Queries
from search.tracking.registry import LOCK_LEASE_SECONDS, Registry
from search.tracking.trial_log import TrialLog, root_cause

if TYPE_CHECKING:
    import optuna

    from runners.metrics import Evaluation

__all__ = ["LOCK_LEASE_SECONDS", "RUN_STATUS", "Tracker", "TrialLog", "confusion_json"]

logger = logging.getLogger(__name__)

# Optuna's trial states, as MLflow run statuses.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_BATCH = 900  # below MLflow's 1000-entity limit per log_batch


def _metric_key(class_name: str) -> str:
    """``T-shirt/top`` -> ``t_shirt_top``: a metric-name-safe class name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", class_name).strip("_").lower()


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker(Registry, Models, Queries):
    """fmsearch's view of one MLflow tracking store.

    Args:
        tracking_uri: Any MLflow tracking URI (``sqlite:///...``, ``postgresql://...``,
            ``http://host:5000``).
        artifact_root: Where new experiments keep artifacts; None lets the store decide.
    """

    def __init__(self, *, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self._artifact_root = artifact_root
        # Model logging and loading go through MLflow's fluent API, which reads the
        # process-wide URI; MLflow also exports it to os.environ (child processes inherit it).
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def check_connection(self) -> None:
        """Fail fast, with the reason, when the store does not answer.

        Raises:
            FmsearchError: The tracking store is unreachable or unusable.
        """
        try:
            self._client.search_experiments(max_results=1)
        except Exception as exc:
            raise FmsearchError(
                f"tracking URI {redact(self.tracking_uri)} does not answer: {root_cause(exc)}"
            ) from exc

    # Experiments and runs ------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (or restored) if needed."""
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self._client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        location = None
        if self._artifact_root is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
            location = (self._artifact_root / safe).resolve().as_uri()
        try:
            return self._client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Another process created it between our lookup and our create.
            experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                raise
            logger.debug("experiment %s created concurrently: %s", name, exc)
            return experiment.experiment_id

    def start_study_run(
        self, *, experiment_id: str, study_name: str, arch: str, params: dict[str, Any]
    ) -> str:
        """The study's parent run: found by its tags when the study resumes, else created.

        ``params`` are logged when the run is created; a resumed study keeps its first ones.
        """
        runs = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if runs:
            run_id = runs[0].info.run_id
            self._client.update_run(run_id, status="RUNNING")
            return run_id
        run_id = self.start_run(
            experiment_id=experiment_id,
            run_name=study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: study_name, ARCH_TAG: arch},
        )
        self._log(run_id, params=params)
        return run_id

    def start_run(self, *, experiment_id: str, run_name: str, tags: dict[str, Any]) -> str:
        """A new run in ``experiment_id``; nest it with a ``mlflow.parentRunId`` tag."""
        run = self._client.create_run(
            experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()}
        )
        return run.info.run_id

    def start_trial_run(
        self,
        *,
        experiment_id: str,
        parent_run_id: str,
        study_name: str,
        arch: str,
        trial_number: int,
        params: dict[str, Any],
        refit_of: int | None = None,
        rung: int | None = None,
        stands_in_for: int | None = None,
    ) -> str:
        """A nested run for one trial, holding all its params; a refit (of trial
        ``refit_of``), a rung of a planned search and a retraining on all images (standing in
        for trial ``stands_in_for``) say so in its name and a tag."""
        tags = {
            PARENT_TAG: parent_run_id,
            ROLE_TAG: "trial",
            STUDY_TAG: study_name,
            ARCH_TAG: arch,
            TRIAL_TAG: trial_number,
            STATE_TAG: "RUNNING",
        }
        if refit_of is not None:
            tags[REFIT_TAG] = refit_of
        if rung is not None:
            tags[RUNG_TAG] = rung
        if stands_in_for is not None:
            tags[STANDS_IN_TAG] = stands_in_for
        run_id = self.start_run(
            experiment_id=experiment_id,
            run_name=f"trial-{trial_number}"
            + (f"-refit-of-{refit_of}" if refit_of is not None else "")
            + (f"-rung-{rung}" if rung is not None else "")
            + ("-all-data" if stands_in_for is not None else ""),
            tags=tags,
        )
        self._log(run_id, params=params)
        return run_id

    def start_ensemble_run(
        self,
        *,
        study_name: str,
        parent_run_id: str,
        arch: str,
        name: str,
        model_uris: tuple[str, ...],
        tta: bool,
        params: dict[str, Any],
        stands_in_for: int | None = None,
    ) -> str:
        """A nested run for an ensemble of trials' models (``model_uris``, best first)."""
        tags = {
            PARENT_TAG: parent_run_id,
            ROLE_TAG: "ensemble",
            STUDY_TAG: study_name,
            ARCH_TAG: arch,
            MODEL_URI_TAG: model_uris[0],
            FLAVOR_TAG: "keras",
            MEMBERS_TAG: ",".join(model_uris),
            TTA_TAG: str(tta).lower(),
        }
        if stands_in_for is not None:
            tags[STANDS_IN_TAG] = stands_in_for
        run_id = self.start_run(
            experiment_id=self.experiment_id(study_name), run_name=name, tags=tags
        )
        self._log(run_id, params=params)
        return run_id

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's metrics, at step ``epoch``."""
        self._log(run_id, metrics=metrics, step=epoch)

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        self._log(run_id, metrics=metrics, step=step)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._log(run_id, params=params)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._log(run_id, tags=tags)

    def end_run(self, run_id: str, *, status: str, reason: str | None = None) -> None:
        """End a run as ``FINISHED``, ``KILLED`` or ``FAILED``, recording why."""
        if reason:
            self._log(run_id, tags={REASON_TAG: reason[:5000]})
        self._client.set_terminated(run_id, status=status)

    def end_trial_run(self, run_id: str, *, state: str, reason: str | None = None) -> None:
        """End a trial's run with the MLflow status that matches Optuna's ``state``."""
        self._log(run_id, tags={STATE_TAG: state})
        self.end_run(run_id, status=RUN_STATUS[state], reason=reason)

    def _log(
        self,
        run_id: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        now = _now_ms()
        entities: list[Any] = [Param(k, str(v)) for k, v in (params or {}).items()]
        entities += [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        entities += [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, len(entities), _BATCH):
            chunk = entities[i : i + _BATCH]
            self._client.log_batch(
                run_id,
                metrics=[e for e in chunk if isinstance(e, Metric)],
                params=[e for e in chunk if isinstance(e, Param)],
                tags=[e for e in chunk if isinstance(e, RunTag)],
            )

    # Artifacts -------------------------------------------------------------------------------

    def log_evaluation(
        self, run_id: str, evaluation: Evaluation, *, class_names: tuple[str, ...], split: str
    ) -> None:
        """Confusion matrix (PNG and JSON) and classification report of one data split."""
        from runners.metrics import confusion_figure

        figure = confusion_figure(
            evaluation.confusion,
            class_names=class_names,
            title=f"{split} accuracy {evaluation.accuracy:.4f}",
        )
        self._client.log_figure(run_id, figure, f"{split}_confusion_matrix.png")
        self._client.log_dict(
            run_id,
            {"labels": list(class_names), "matrix": evaluation.confusion.tolist()},
            f"{split}_confusion_matrix.json",
        )
        self._client.log_dict(run_id, evaluation.report, f"{split}_classification_report.json")
        per_class = {
            f"{split}_f1_{_metric_key(name)}": evaluation.report[name]["f1-score"]
            for name in class_names
        }
        self._log(
            run_id,
            metrics={
                f"{split}_accuracy": evaluation.accuracy,
                f"{split}_macro_f1": evaluation.macro_f1,
                f"{split}_worst_class_f1": min(per_class.values()),
                **per_class,
            },
        )

    def log_pareto_front(
        self, run_id: str, study: optuna.Study, *, objectives: tuple[str, ...]
    ) -> None:
        """The Pareto front of a multi-objective study: a JSON table and Optuna's plot."""
        import warnings

        import matplotlib.pyplot as plt
        import optuna

        front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)
        rows = [
            {
                "trial": t.number,
                **dict(zip(objectives, t.values, strict=True)),
                "run_id": t.user_attrs.get(RUN_ID_ATTR),
            }
            for t in front
        ]
        self._client.log_dict(run_id, {"objectives": list(objectives), "front": rows},
                              "pareto_front.json")  # fmt: skip
        with warnings.catch_warnings():  # the matplotlib backend is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = optuna.visualization.matplotlib.plot_pareto_front(
                study, target_names=[f"val {objectives[0]}", objectives[1]]
            )
        try:
            self._client.log_figure(run_id, axes.figure, "pareto_front.png")
        finally:
            plt.close(axes.figure)

    def log_figures(self, run_id: str, figures: dict[str, Any], *, folder: str = "") -> None:
        """Matplotlib figures as PNG artifacts, ``{folder}/{name}.png``; each is closed after."""
        for name, figure in figures.items():
            path = f"{folder}/{name}.png" if folder else f"{name}.png"
            self._client.log_figure(run_id, figure, path, save_kwargs={"dpi": 110})

    def log_files(self, run_id: str, files: list[Path], *, folder: str | None = None) -> None:
        """Files as artifacts (HTML reports, CSV tables), under ``folder``."""
        for file in files:
            self._client.log_artifact(run_id, str(file), artifact_path=folder)

    def log_json(self, run_id: str, data: Any, path: str) -> None:
        self._client.log_dict(run_id, data, path)

    def start_insight_run(self, *, experiment: str, run_name: str, tags: dict[str, Any]) -> str:
        """A run in experiment ``experiment`` for cross-study pictures (EDA, leaderboards)."""
        return self.start_run(
            experiment_id=self.experiment_id(experiment), run_name=run_name, tags=tags
        )


def confusion_json(evaluation: Evaluation) -> str:
    """The confusion matrix as compact JSON, small enough for a model-version tag."""
    return json.dumps(evaluation.confusion.tolist(), separators=(",", ":"))
