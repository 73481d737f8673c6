"""Every MLflow call fmsearch makes (but the served model's own loader): one package, by run
id. Runs, metrics, artifacts and logged models here; the model registry in ``registry``; a
trial's record kept through a tracking outage in ``trial_log``.

MLflow's fluent API keeps a global active run and is not thread-safe, so fmsearch talks to
MLflow through an ``MlflowClient`` and explicit run ids. The one global it sets is the tracking
URI, because ``Model.log`` resolves it.

Layout in MLflow: one experiment per study; in it one parent run per study (tag
``fmsearch.role=study``), one nested run per trial (``fmsearch.role=trial``) and one per
promotion (``fmsearch.role=promotion``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from runners.errors import FmsearchError
from search.names import (
    ARCH_TAG,
    EXTRA_PACKAGES_TAG,
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
from search.tracking.registry import LOCK_LEASE_SECONDS, Registry
from search.tracking.trial_log import TrialLog, root_cause

if TYPE_CHECKING:
    import keras
    import optuna
    from mlflow.pyfunc import PyFuncModel

    from runners.metrics import Evaluation

__all__ = ["LOCK_LEASE_SECONDS", "RUN_STATUS", "Tracker", "TrialLog", "confusion_json"]

logger = logging.getLogger(__name__)

SERVED_MODEL_CODE = Path(__file__).parent / "served_model.py"
# Optuna's trial states, as MLflow run statuses.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_BATCH = 900  # below MLflow's 1000-entity limit per log_batch


def _requirements(*packages: str) -> list[str]:
    # Explicit requirements: MLflow's inference imports the model's world on every log.
    return [f"{p}=={version(p)}" for p in packages]


# Each MLflow flavor fmsearch logs: its keyword for the model in ``Model.log``, its other
# options, and what a model of it needs installed to be served. cloudpickle would tie a
# scikit-learn model to this Python; pickle is what scikit-learn documents.
_FLAVORS = {
    "keras": ("model", {}, ("keras", "tensorflow")),
    "sklearn": ("sk_model", {"serialization_format": "pickle"}, ("scikit-learn",)),
}


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._prefix)


def _metric_key(class_name: str) -> str:
    """``T-shirt/top`` -> ``t_shirt_top``: a metric-name-safe class name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", class_name).strip("_").lower()


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def _served_model_quiet() -> Iterator[None]:
    # No signature, on purpose: the served model accepts several shapes and dtypes and checks
    # its input itself; MLflow would warn that it could not infer one.
    quiet = _DropRecords("Failed to infer model signature")
    logging.getLogger("mlflow.pyfunc").addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger("mlflow.pyfunc").removeFilter(quiet)


class Tracker(Registry):
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

    def log_model(
        self,
        run_id: str,
        model: Any,
        *,
        flavor: str,
        input_shape: tuple[int, ...],
        output: tuple[type, tuple[int, ...]],
        extra_packages: tuple[str, ...] = (),
    ) -> str:
        """Log a trial's ``model`` with MLflow's ``flavor`` (``keras`` or ``sklearn``) into
        ``run_id``; returns its model URI.

        Its signature: float32 ``(-1, *input_shape)`` in, ``output`` (a dtype and the shape
        after the batch) out. ``extra_packages``: distributions the model needs beyond its
        flavor's (XGBoost's), pinned in its requirements and recorded for the served model.
        """
        import importlib

        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        model_arg, options, _ = _FLAVORS[flavor]
        dtype, shape = output
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=importlib.import_module(f"mlflow.{flavor}"),
            run_id=run_id,
            signature=ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
                outputs=Schema([TensorSpec(np.dtype(dtype), (-1, *shape))]),
            ),
            pip_requirements=self.served_requirements(flavor, extra=extra_packages),
            **{model_arg: model, **options},
        )
        tags = {MODEL_URI_TAG: info.model_uri, FLAVOR_TAG: flavor}
        self._log(run_id, tags={**tags, EXTRA_PACKAGES_TAG: ",".join(extra_packages)})
        return info.model_uri

    def log_served_model(
        self,
        run_id: str,
        *,
        model_uri: str,
        flavor: str,
        class_names: tuple[str, ...],
        extra_packages: tuple[str, ...] = (),
        members: tuple[str, ...] = (),
        tta: bool = False,
        temperature: float = 1.0,
    ) -> str:
        """Log the pyfunc model that serves ``model_uri`` (``keras`` or ``sklearn`` flavor).

        With ``members`` (Keras model URIs, ``model_uri`` first), the served model averages
        their probabilities; with ``tta``, also over the mirrored images; with a
        ``temperature`` other than 1, it scales the result (calibration).

        Returns:
            The served model's URI.
        """
        import mlflow.pyfunc
        from mlflow.models import Model

        served = self._served_model(
            model_uri=model_uri, flavor=flavor, class_names=class_names,
            extra_packages=extra_packages, members=members, tta=tta, temperature=temperature,
        )  # fmt: skip
        with _served_model_quiet():
            info = Model.log(artifact_path=None, name="model", flavor=mlflow.pyfunc,
                             flavor_name="pyfunc.ModelFromCode", run_id=run_id,
                             **served)  # fmt: skip
        self._log(run_id, tags={MODEL_URI_TAG: info.model_uri})
        return info.model_uri

    def preview_served_model(self, **served: Any) -> PyFuncModel:
        """The served model :meth:`log_served_model` would log (same arguments but the run),
        saved to a temporary folder and loaded, recorded nowhere: what promotion predicts
        the validation images with before it decides the served model's temperature."""
        import tempfile

        import mlflow.pyfunc

        with tempfile.TemporaryDirectory() as folder, _served_model_quiet():
            path = Path(folder) / "served"
            mlflow.pyfunc.save_model(path, **self._served_model(**served))
            return mlflow.pyfunc.load_model(str(path))

    def _served_model(self, *, model_uri, flavor, class_names, extra_packages=(), members=(),
                      tta=False, temperature=1.0) -> dict[str, Any]:  # fmt: skip
        uris = members or (model_uri,)
        names = ["model", *(f"model_{i}" for i in range(1, len(uris)))]
        return {
            "python_model": str(SERVED_MODEL_CODE),
            "artifacts": dict(zip(names, uris, strict=True)),
            "model_config": {
                "class_names": list(class_names),
                "flavor": flavor,
                "members": names,
                "tta": tta,
                "temperature": temperature,
            },
            "pip_requirements": self.served_requirements(flavor, extra=extra_packages),
        }

    @staticmethod
    def served_requirements(flavor: str, *, extra: tuple[str, ...] = ()) -> list[str]:
        """What the served model of ``flavor`` needs installed, pinned to this environment."""
        return _requirements("mlflow", "numpy", "pandas", *_FLAVORS[flavor][2], *extra)

    def load_keras_model(self, model_uri: str) -> keras.Model:
        """A Keras model a trial logged (fmsearch's own: never load one from elsewhere)."""
        import mlflow.keras

        return mlflow.keras.load_model(model_uri)

    def load_served_model(self, model_uri: str) -> PyFuncModel:
        """Load a served (pyfunc) model: ``models:/NAME@ALIAS``, ``runs:/...`` or a path."""
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(model_uri)

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

    # Reading runs ----------------------------------------------------------------------------

    def metric_histories(self, run_id: str, keys: tuple[str, ...]) -> dict[str, list[float]]:
        """Each metric's values in step order; metrics the run never logged are left out."""
        histories = {}
        for key in keys:
            points = sorted(self._client.get_metric_history(run_id, key), key=lambda m: m.step)
            if points:
                histories[key] = [m.value for m in points]
        return histories

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of a run."""
        return dict(self._client.get_run(run_id).data.metrics)

    def artifact_paths(self, run_id: str, folder: str | None = None) -> list[str]:
        return [f.path for f in self._client.list_artifacts(run_id, folder)]

    def study_run_id(self, study_name: str) -> str | None:
        """The parent run of study ``study_name``, if it was ever started."""
        experiment = self._client.get_experiment_by_name(study_name)
        if experiment is None:
            return None
        runs = self.find_runs(experiment.experiment_id, role="study", study_name=study_name)
        return runs[0].info.run_id if runs else None

    def running_trial_runs(self, study_name: str) -> dict[str, int]:
        """The trial runs of study ``study_name`` that MLflow shows as running: run id to
        trial number."""
        experiment = self._client.get_experiment_by_name(study_name)
        if experiment is None:
            return {}
        runs = self.find_runs(
            experiment.experiment_id, role="trial", study_name=study_name, status="RUNNING"
        )
        return {r.info.run_id: int(r.data.tags[TRIAL_TAG]) for r in runs}

    def run_params(self, run_id: str) -> dict[str, str]:
        return dict(self._client.get_run(run_id).data.params)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._client.get_run(run_id).data.tags)

    def find_runs(
        self, experiment_id: str, *, role: str, study_name: str, status: str | None = None
    ) -> list:
        """All runs of one role (``trial``, ``promotion``, ``study``) in a study; with
        ``status`` (``RUNNING``, ...), only those."""
        query = f"tags.`{ROLE_TAG}` = '{role}' and tags.`{STUDY_TAG}` = '{study_name}'"
        if status is not None:
            query += f" and attributes.status = '{status}'"
        return self._client.search_runs([experiment_id], filter_string=query, max_results=10_000)


def confusion_json(evaluation: Evaluation) -> str:
    """The confusion matrix as compact JSON, small enough for a model-version tag."""
    return json.dumps(evaluation.confusion.tolist(), separators=(",", ":"))
