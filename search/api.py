"""fmsearch's Python API: what the ``fmsearch`` commands do, as keyword-only functions that
return result objects. The command line (``search.cli``) parses options and calls one of
these; a notebook calls them directly and gets the same behaviour, output included::

    from search import api

    result = api.search(arch="mlp", trials=10, subset=10_000, max_epochs=5)
    result.promotion.test_accuracy
    api.predict(model_uri=f"models:/{result.promotion.model_name}@champion", images=x)

Stores default to ``./mlruns`` as on the command line; environment variables are the CLI's
business (pass ``storage=`` and ``tracking_uri=``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError
from search.recipes.finetune import finetune
from search.recipes.reproduce import reproduce
from search.run.orchestrator import SearchResult, WorkResult, promote_study, run_search, work
from search.run.pipeline import SearchOptions
from search.run.start import (
    load_tensorflow,
    open_storage,
    open_tracker,
    preload,
    start_up_output_logged,
)

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd

    from search.insight.report import StudyReport
    from search.outcome import StudyOutcome
    from search.promotion.promote import Promotion

__all__ = [
    "SearchOptions",
    "SearchResult",
    "WorkResult",
    "finetune",
    "load_tensorflow",
    "open_storage",
    "open_tracker",
    "predict",
    "preload",
    "promote",
    "report",
    "reproduce",
    "run_search",
    "search",
    "studies",
    "work",
]


def search(options: SearchOptions | None = None, /, **fields: Any) -> SearchResult:
    """Search an architecture: add trials to a study, then promote the best model.

    Running the same search again resumes the study and adds trials.

    Args:
        options: The search's options; or give them as keywords (``arch="mlp",
            trials=10``), which also override ``options``' fields. See
            :class:`SearchOptions`.

    Raises:
        FmsearchError: Options that cannot work together, a study that cannot resume with
            them, stores out of reach, a search whose every trial fails.
    """
    options = replace(options, **fields) if options else SearchOptions(**fields)
    return run_search(options)


def studies(
    *, storage: str | None = None, study_name: str | None = None
) -> list[tuple[optuna.Study, StudyOutcome]]:
    """Every study in ``storage`` (or only ``study_name``) with its outcome, by name."""
    import optuna

    from search.outcome import summarize

    optuna_storage = open_storage(storage)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(optuna_storage))
    names = [n for n in names if study_name in (None, n)]
    loaded = [optuna.load_study(study_name=n, storage=optuna_storage) for n in names]
    return [(study, summarize(study, parent_run_id="")) for study in loaded]


def promote(
    *,
    study_name: str,
    storage: str | None = None,
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
    register_as: str | None = None,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
) -> Promotion:
    """Judge a study's best trial on the test set and register it: the ``champion`` alias
    if it beats the current champion's test accuracy, else ``challenger``."""
    return promote_study(study_name=study_name, storage=storage, tracking_uri=tracking_uri,
                         data_dir=data_dir, register_as=register_as, max_params=max_params,
                         max_latency_ms=max_latency_ms)  # fmt: skip


def report(
    *,
    study_name: str,
    storage: str | None = None,
    tracking_uri: str | None = None,
    register_as: str | None = None,
    output: Path | None = None,
) -> StudyReport:
    """Draw a study's report, attach it to its MLflow parent run, and write it as one HTML
    file at ``output`` (default ``report-STUDY.html``)."""
    from search.insight.report import publish_report
    from search.promotion.promote import default_model_name
    from search.storage.rdb import load_study

    tracker = open_tracker(tracking_uri)
    study = load_study(storage=open_storage(storage), study_name=study_name)
    return publish_report(
        study=study,
        tracker=tracker,
        model_name=register_as or default_model_name(study),
        html_path=output or Path(f"report-{study_name}.html"),
    )


def predict(*, model_uri: str, images: np.ndarray, tracking_uri: str | None = None) -> pd.DataFrame:
    """Classify ``images`` (N x 28 x 28, 0-255) with a registered or logged model: one row
    per image, its class index and name and the ten probabilities."""
    tracker = open_tracker(tracking_uri)
    try:
        with start_up_output_logged():  # a Keras model starts TensorFlow here
            model = tracker.load_served_model(model_uri)
    except Exception as exc:
        raise FmsearchError(f"cannot load model {model_uri}: {str(exc).splitlines()[0]}") from exc
    try:
        return model.predict(images)
    except ValueError as exc:
        raise FmsearchError(str(exc)) from exc
