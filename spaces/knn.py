"""k-nearest neighbours (scikit-learn) on the pixels, optionally behind PCA.

Hyperparameters:
    pca_components (categorical, 0 / 16 / 32 / 64 / 128): PCA components, 0 for none.
    n_neighbors (int, 1 to 20): neighbours that vote.
    weights (categorical, uniform / distance): how the votes count.
    p (categorical, 1 / 2): Manhattan or Euclidean distance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import sklearn_pipeline, suggest_pca

if TYPE_CHECKING:
    import optuna

KIND = "sklearn"
REQUIRES = None
SHORT_RUN: dict[str, Any] = {}
BACKBONE = None
# The Fashion-MNIST authors' best kNN setting: 5 neighbours, distance weights, Manhattan.
DEFAULTS = {"pca_components": 0, "n_neighbors": 5, "weights": "distance", "p": 1}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one kNN configuration."""
    return {
        **suggest_pca(trial),
        "n_neighbors": trial.suggest_int("n_neighbors", 1, 20),
        "weights": trial.suggest_categorical("weights", ("uniform", "distance")),
        "p": trial.suggest_categorical("p", (1, 2)),
    }


def build(params: dict[str, Any], **_: Any) -> Any:
    """Build the (unfitted) kNN pipeline that ``params`` describes."""
    from sklearn.neighbors import KNeighborsClassifier

    model = KNeighborsClassifier(
        n_neighbors=params["n_neighbors"], weights=params["weights"], p=params["p"], n_jobs=-1
    )
    return sklearn_pipeline(params, model)
