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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError
from search.recipes.finetune import finetune
from search.recipes.reproduce import reproduce
from search.run.config import SearchOptions
from search.run.orchestrator import SearchResult, WorkResult, promote, run_search, work
from search.run.start import (
    load_tensorflow,
    open_storage,
    open_tracker,
    preload,
    start_up_output_logged,
)
from search.services import mlflow_ui as ui
from search.services import optuna_dashboard as dashboard
from search.services import tracking_server as server

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd
    from optuna.distributions import BaseDistribution

    from runners.data import FashionMNIST
    from search.insight.explain import Explanation
    from search.insight.leaderboard import Entry
    from search.insight.lr_find import LearningRateFinding
    from search.insight.report import StudyReport
    from search.outcome import StudyOutcome
    from spaces.recipes import Recipe

__all__ = [
    "Eda",
    "Leaderboard",
    "SearchOptions",
    "SearchResult",
    "WorkResult",
    "dashboard",
    "data",
    "eda",
    "explain",
    "finetune",
    "leaderboard",
    "load_tensorflow",
    "lr_find",
    "open_storage",
    "open_tracker",
    "predict",
    "preload",
    "promote",
    "recipes",
    "report",
    "reproduce",
    "run_search",
    "search",
    "server",
    "space",
    "spaces",
    "studies",
    "ui",
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


@dataclass(frozen=True)
class Leaderboard:
    """What :func:`leaderboard` judged: the entries, best first, the CSV and the MLflow run."""

    entries: list[Entry]
    csv_path: Path
    run_id: str


def leaderboard(
    *,
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
    model_names: tuple[str, ...] = (),
    csv_path: Path = Path("leaderboard.csv"),
) -> Leaderboard:
    """Judge the champion of every ``fmsearch-*`` model (or of ``model_names``) again on the
    test set; write the table to ``csv_path`` and log it with a bar chart to the
    ``fmsearch-leaderboard`` experiment."""
    from runners.data import load_fashion_mnist
    from search.insight.leaderboard import build_leaderboard, publish_leaderboard

    load_tensorflow()  # the champions are Keras models, mostly
    tracker = open_tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    entries = build_leaderboard(tracker=tracker, test_images=data.x_test,
                                test_labels=data.y_test, model_names=model_names)  # fmt: skip
    run_id = publish_leaderboard(entries=entries, tracker=tracker, csv_path=csv_path,
                                 n_images=len(data.y_test))  # fmt: skip
    return Leaderboard(entries=entries, csv_path=csv_path, run_id=run_id)


@dataclass(frozen=True)
class Eda:
    """What :func:`eda` logged: its run, and images per class in each split
    (``counts["train"]["Shirt"]``)."""

    run_id: str
    counts: dict[str, dict[str, int]]


def eda(
    *, tracking_uri: str | None = None, data_dir: Path | None = None, val_size: int = 10_000
) -> Eda:
    """Log the class distribution of train / validation / test (split as ``fmsearch run``
    splits, ``val_size`` validation images) and samples of each class to ``fmsearch-eda``."""
    from runners.data import load_fashion_mnist, split_train_val
    from search.insight.eda import run_eda

    tracker = open_tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    split = split_train_val(data.x_train, data.y_train, val_size=val_size)
    run_id, counts = run_eda(data=data, split=split, tracker=tracker)
    return Eda(run_id=run_id, counts=counts)


def explain(
    *,
    model_uri: str,
    index: int = 0,
    embedding: str | None = None,
    embedding_images: int = 2000,
    lime_samples: int = 500,
    output_dir: Path = Path("explanations"),
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
) -> Explanation:
    """Explain ``model_uri``'s prediction of test image ``index`` (occlusion saliency, LIME),
    and with ``embedding`` (``pca``, ``tsne``, ``umap``) map its penultimate features of
    ``embedding_images`` test images; the pictures go to ``output_dir`` and to
    ``fmsearch-explain``."""
    from runners.data import load_fashion_mnist
    from search.insight.explain import explain as explain_image

    load_tensorflow()
    tracker = open_tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    return explain_image(tracker=tracker, model_uri=model_uri, images=data.x_test,
                         labels=data.y_test, index=index, output_dir=output_dir,
                         lime_samples=lime_samples, embedding=embedding,
                         embedding_images=embedding_images)  # fmt: skip


def lr_find(
    *,
    arch: str,
    steps: int = 200,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    subset: int = 20_000,
    output_dir: Path = Path("explanations"),
    write_space_file: Path | None = None,
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
    threads: int | None = None,
) -> LearningRateFinding:
    """The learning-rate range test of ``arch``: ``steps`` batches from ``subset`` training
    images while the rate rises from ``min_lr`` to ``max_lr``; the suggested range, also
    written as a space file for ``fmsearch run --space-file`` at ``write_space_file``.

    Raises:
        FmsearchError: ``min_lr`` not below ``max_lr``, or ``arch`` not a Keras architecture.
    """
    from runners.data import load_fashion_mnist, split_train_val
    from search.insight.lr_find import find_learning_rate_range

    if min_lr >= max_lr:
        raise FmsearchError(f"expected --min-lr below --max-lr ({max_lr:g}), got {min_lr:g}")
    load_tensorflow(threads=threads)
    tracker = open_tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    split = split_train_val(data.x_train, data.y_train, val_size=1000, subset=subset)
    found = find_learning_rate_range(arch=arch, split=split, tracker=tracker,
                                     output_dir=output_dir, steps=steps, min_lr=min_lr,
                                     max_lr=max_lr)  # fmt: skip
    if write_space_file is not None:
        write_space_file.write_text(
            f"# fmsearch lr-find --arch {arch} (run {found.run_id})\n"
            f"learning_rate: {{low: {found.low:.3g}, high: {found.high:.3g}}}\n",
            encoding="utf-8",
        )
    return found


def data(*, data_dir: Path | None = None) -> FashionMNIST:
    """Fashion-MNIST, found (``data_dir``, the Debian package, the Keras cache) or downloaded,
    its shapes, labels and checksums verified."""
    from runners.data import load_fashion_mnist

    return load_fashion_mnist(data_dir=data_dir)


def spaces() -> dict[str, str]:
    """Every architecture ``arch=`` takes, with the first line of its description."""
    from spaces import ARCHITECTURES

    return {name: module.__doc__.strip().splitlines()[0] for name, module in ARCHITECTURES.items()}


def space(*, arch: str) -> dict[str, BaseDistribution]:
    """What ``arch`` searches: each hyperparameter's Optuna distribution.

    Raises:
        FmsearchError: ``arch`` is not an architecture.
    """
    import optuna

    from search.trials.choices import describe_space
    from spaces import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise FmsearchError(f"expected one of {', '.join(sorted(ARCHITECTURES))}, got {arch!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return describe_space(ARCHITECTURES[arch])


def recipes() -> dict[str, Recipe]:
    """The source projects' published configurations, by name: what ``enqueue=NAME`` starts
    from and :func:`reproduce` trains."""
    from spaces.recipes import RECIPES

    return dict(RECIPES)
