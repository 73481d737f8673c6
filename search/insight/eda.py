"""The data set's EDA: images per class and split, and samples of each class, logged to the
``fmsearch-eda`` experiment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from runners.data import CLASS_NAMES
from search.names import ROLE_TAG

if TYPE_CHECKING:
    from runners.data import FashionMNIST, Split
    from search.tracking import Tracker


EDA_EXPERIMENT = "fmsearch-eda"


def run_eda(*, data: FashionMNIST, split: Split, tracker: Tracker) -> tuple[str, dict]:
    """Log the class distribution of train/validation/test and samples of each class.

    Returns:
        The EDA run's id, and the per-split class counts it logged.
    """
    from runners.figures import class_distribution, samples_per_class

    counts = {
        "train": np.bincount(split.y_train, minlength=len(CLASS_NAMES)),
        "validation": np.bincount(split.y_val, minlength=len(CLASS_NAMES)),
        "test": np.bincount(data.y_test, minlength=len(CLASS_NAMES)),
    }
    run_id = tracker.start_insight_run(
        experiment=EDA_EXPERIMENT, run_name="eda", tags={ROLE_TAG: "eda"}
    )
    figures = {
        "class_distribution": class_distribution(
            counts, class_names=CLASS_NAMES, title="Fashion-MNIST: images per class and split"
        ),
        "samples_per_class": samples_per_class(data.x_train, data.y_train, class_names=CLASS_NAMES),
    }
    tracker.log_figures(run_id, figures)
    table = {
        split_name: dict(zip(CLASS_NAMES, map(int, values), strict=True))
        for split_name, values in counts.items()
    }
    tracker.log_json(run_id, table, "class_counts.json")
    tracker.log_metrics(run_id, {f"{k}_images": int(v.sum()) for k, v in counts.items()})
    tracker.end_run(run_id, status="FINISHED")
    return run_id, table
