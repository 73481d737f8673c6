"""Every MLflow call fmsearch makes (but the served model's own loader): one module, by run id.

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
import os
import re
import socket
import time
import uuid
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
    LOCK_EXPIRES_TAG,
    LOCK_HOLDER_TAG,
    MEMBERS_TAG,
    MODEL_URI_TAG,
    PARENT_TAG,
    REASON_TAG,
    REFIT_TAG,
    ROLE_TAG,
    RUN_ID_ATTR,
    RUNG_TAG,
    SOURCE_RUN_TAG,
    STANDS_IN_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    TTA_TAG,
)
from search.urls import redact

if TYPE_CHECKING:
    import keras
    import optuna
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PyFuncModel

    from runners.metrics import Evaluation

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
# Longer than any promotion (judging an ensemble on the test set on a slow CPU: minutes), so
# that a live holder never loses the lock to the lease; a dead one on this host loses it at
# once (its process is gone), elsewhere when the lease runs out.
LOCK_LEASE_SECONDS = 900.0

SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")
# Optuna's trial states, as MLflow run statuses.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_BATCH = 900  # below MLflow's 1000-entity limit per log_batch


def _requirements(*packages: str) -> list[str]:
    # Explicit requirements: inferring them costs about 10 s per logged model.
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


def _root_cause(exc: BaseException) -> str:
    """The telling part of a client error: the OS error behind MLflow's retry wrappers."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:
        return errno.group(0)
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _metric_key(class_name: str) -> str:
    """``T-shirt/top`` -> ``t_shirt_top``: a metric-name-safe class name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", class_name).strip("_").lower()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _holder_gone(holder: str, expires: str | None) -> bool:
    """Whether a registry lock's holder (``host:pid:token``) can no longer be holding it."""
    try:
        if time.time() > float(expires or "nan"):
            return True
    except ValueError:
        return True  # a lock without a readable lease was not written by fmsearch's code
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


class Tracker:
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
                f"tracking URI {redact(self.tracking_uri)} does not answer: {_root_cause(exc)}"
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
    ) -> str:
        """Log the pyfunc model that serves ``model_uri`` (``keras`` or ``sklearn`` flavor).

        With ``members`` (Keras model URIs, ``model_uri`` first), the served model averages
        their probabilities; with ``tta``, also over the mirrored images.

        Returns:
            The served model's URI.
        """
        uris = members or (model_uri,)
        names = ["model", *(f"model_{i}" for i in range(1, len(uris)))]
        import mlflow.pyfunc
        from mlflow.models import Model

        # No signature, on purpose: the model accepts several shapes and dtypes and checks
        # its input itself; MLflow would warn that it could not infer one.
        quiet = _DropRecords("Failed to infer model signature")
        logging.getLogger("mlflow.pyfunc").addFilter(quiet)
        try:
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                flavor_name="pyfunc.ModelFromCode",
                run_id=run_id,
                python_model=str(SERVED_MODEL_CODE),
                artifacts=dict(zip(names, uris, strict=True)),
                model_config={
                    "class_names": list(class_names),
                    "flavor": flavor,
                    "members": names,
                    "tta": tta,
                },
                pip_requirements=self.served_requirements(flavor, extra=extra_packages),
            )
        finally:
            logging.getLogger("mlflow.pyfunc").removeFilter(quiet)
        self._log(run_id, tags={MODEL_URI_TAG: info.model_uri})
        return info.model_uri

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

    # Registry --------------------------------------------------------------------------------

    def find_version(self, name: str, *, source_run_id: str) -> ModelVersion | None:
        """The version of ``name`` registered from the trial run ``source_run_id``, if any."""
        try:
            versions = self._client.search_model_versions(
                f"name = '{name}' and tags.`{SOURCE_RUN_TAG}` = '{source_run_id}'"
            )
        except MlflowException:
            return None
        return versions[0] if versions else None

    def version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def register(
        self, *, name: str, model_uri: str, run_id: str, tags: dict[str, Any], description: str
    ) -> ModelVersion:
        """A new version of registered model ``name`` (created if needed).

        Args:
            name: The registered model.
            model_uri: A logged model, ``models:/<model_id>``.
            run_id: The run that logged it.
            tags: Version tags.
            description: Version description.
        """
        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return self._client.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags={k: str(v) for k, v in tags.items()},
            description=description,
            model_id=model_uri.removeprefix("models:/"),
        )

    def champions(self, *, prefix: str = "fmsearch-") -> list[ModelVersion]:
        """The champion version of every registered model whose name starts with ``prefix``."""
        found = []
        for model in self._client.search_registered_models(max_results=1000):
            if not model.name.startswith(prefix):
                continue
            champion = self.version_by_alias(model.name, "champion")
            if champion is not None:
                found.append(champion)
        return sorted(found, key=lambda v: v.name)

    @contextlib.contextmanager
    def registry_lock(
        self,
        name: str,
        *,
        timeout: float,
        lease: float = LOCK_LEASE_SECONDS,
        poll: float = 0.5,
    ) -> Iterator[None]:
        """Hold a lock on registered model ``name`` among every process that uses this
        registry, whichever study storage each one searched in.

        The lock is a registered model, ``NAME.lock``: the registry refuses a second model of
        one name, so creating it is the acquire, deleting it the release. A holder that died
        leaves it behind; it is broken once its holder's process is gone (same host) or its
        lease has run out (any host), by renaming it to a name made from the holder's token,
        which only one of several breakers can take.

        Raises:
            FmsearchError: Still held by another process after ``timeout`` seconds.
        """
        lock = f"{name}{LOCK_SUFFIX}"
        token = uuid.uuid4().hex[:12]
        holder = f"{socket.gethostname()}:{os.getpid()}:{token}"
        deadline = time.monotonic() + timeout
        broken: list[str] = []
        while True:
            try:
                self._client.create_registered_model(
                    lock,
                    tags={LOCK_HOLDER_TAG: holder, LOCK_EXPIRES_TAG: f"{time.time() + lease:.0f}"},
                    description=f"Held by fmsearch while it promotes a version of {name}; "
                    "deleted when it is done.",
                )
                break
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            broken += self._break_stale_lock(lock)
            if time.monotonic() > deadline:
                raise FmsearchError(
                    f"registry lock {lock!r} still held by another process after {timeout:g} s"
                    f" ({self._lock_holder(lock)}); delete that registered model if its "
                    "holder is gone"
                )
            time.sleep(poll)
        try:
            yield
        finally:
            # What this holder broke goes first: while it stands, no breaker that read the
            # dead holder before can rename this holder's live lock to the same name.
            for name_ in broken:
                with contextlib.suppress(MlflowException):
                    self._client.delete_registered_model(name_)
            if self._lock_holder(lock) == holder:
                with contextlib.suppress(MlflowException):
                    self._client.delete_registered_model(lock)

    def _lock_holder(self, lock: str) -> str | None:
        try:
            return self._client.get_registered_model(lock).tags.get(LOCK_HOLDER_TAG)
        except MlflowException:
            return None

    def _break_stale_lock(self, lock: str) -> list[str]:
        """Rename ``lock`` aside when its holder is gone; the new name, if this call did it."""
        try:
            tags = self._client.get_registered_model(lock).tags
        except MlflowException:
            return []  # released meanwhile
        holder = tags.get(LOCK_HOLDER_TAG, "")
        if not _holder_gone(holder, tags.get(LOCK_EXPIRES_TAG)):
            return []
        aside = f"{lock}.broken-{re.sub(r'[^A-Za-z0-9]', '', holder.rpartition(':')[2])}"
        try:
            self._client.rename_registered_model(lock, aside)
        except MlflowException:
            return []  # another waiter broke it first, or it was released
        logger.warning("broke registry lock %s: its holder %s is gone", lock, holder or "?")
        return [aside]

    def set_alias(self, name: str, alias: str, version_: str) -> None:
        self._client.set_registered_model_alias(name, alias, version_)

    def set_version_tags(self, name: str, version_: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_model_version_tag(name, version_, key, str(value))


def confusion_json(evaluation: Evaluation) -> str:
    """The confusion matrix as compact JSON, small enough for a model-version tag."""
    return json.dumps(evaluation.confusion.tolist(), separators=(",", ":"))


class TrialLog:
    """One trial's MLflow record, kept through a tracking store outage.

    Each write is queued and the queue sent in order; when the store does not answer, the
    trial goes on training, later writes wait in the queue (sent again at most every
    ``retry_seconds``), and :meth:`close` tries ``close_attempts`` more times before it gives
    up. What could not be sent is listed in :attr:`unlogged`, for the trial's Optuna record.
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        retry_seconds: float = 15.0,
        close_attempts: int = 3,
        close_wait: float = 5.0,
    ) -> None:
        self._tracker = tracker
        self._queue: list[tuple[str, Any]] = []
        self._retry_seconds = retry_seconds
        self._close_attempts = close_attempts
        self._close_wait = close_wait
        self._failed_at: float | None = None
        self.run_id: str | None = None
        self.unlogged: list[str] = []

    def start(self, **run_args: Any) -> str | None:
        """Create the trial's run (:meth:`Tracker.start_trial_run` arguments)."""

        def create() -> None:
            self.run_id = self._tracker.start_trial_run(**run_args)

        self._send("run and params", create)
        return self.run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._send(f"epoch {epoch} metrics",
                   lambda: self._tracker.log_epoch(self.run_id, epoch, metrics))  # fmt: skip

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        """Queue ``tracker.method(run_id, *args, **kwargs)``; ``what`` names it if it fails."""
        self._send(what, lambda: getattr(self._tracker, method)(self.run_id, *args, **kwargs))

    def log_model(self, log: Any) -> None:
        """Send ``log(run_id)`` now, once the queue is through; models are not kept waiting."""
        if self._drain(force=True):
            try:
                log(self.run_id)
                return
            except Exception as exc:
                self._failed(exc)
        self.unlogged.append("model")

    def close(self, *, state: str, reason: str | None = None) -> list[str]:
        """End the run with Optuna's ``state``; returns what could not be logged."""

        def end() -> None:
            self._tracker.end_trial_run(self.run_id, state=state, reason=reason)

        self._queue.append(("end of run", end))
        for attempt in range(self._close_attempts):
            if self._drain(force=True):
                break
            if attempt + 1 < self._close_attempts:
                time.sleep(self._close_wait)
        self.unlogged += [what for what, _ in self._queue]
        self._queue.clear()
        if self.unlogged:
            logger.warning("the tracking store missed, for good: %s", ", ".join(self.unlogged))
        return self.unlogged

    def _send(self, what: str, operation: Any) -> None:
        self._queue.append((what, operation))
        self._drain()

    def _drain(self, *, force: bool = False) -> bool:
        """Send the queue in order; False when the store failed (the rest stays queued)."""
        recent = (
            self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_seconds
        )
        if recent and not force:
            return False
        while self._queue:
            what, operation = self._queue[0]
            if self.run_id is None and what != "run and params":
                return False
            try:
                operation()
            except Exception as exc:
                self._failed(exc)
                return False
            self._queue.pop(0)
        self._failed_at = None
        return True

    def _failed(self, exc: Exception) -> None:
        if self._failed_at is None:
            logger.warning(
                "tracking store %s does not answer (%s): the trial goes on, its record waits",
                redact(self._tracker.tracking_uri),
                _root_cause(exc),
            )
        self._failed_at = time.monotonic()
