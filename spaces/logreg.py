"""Multinomial logistic regression (scikit-learn) on the pixels, optionally behind PCA.

Hyperparameters:
    pca_components (categorical, 0 / 16 / 32 / 64 / 128): PCA components, 0 for none.
    C (float, 1e-4 to 1e2, log): inverse L2 regularisation strength.
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
MAX_ITER = 300
# The Fashion-MNIST authors' logistic regression setting: C = 1.
DEFAULTS = {"pca_components": 0, "C": 1.0}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one logistic regression configuration."""
    return {**suggest_pca(trial), "C": trial.suggest_float("C", 1e-4, 1e2, log=True)}


def build(params: dict[str, Any], **_: Any) -> Any:
    """Build the (unfitted) logistic regression pipeline that ``params`` describes."""
    from sklearn.linear_model import LogisticRegression

    return sklearn_pipeline(params, LogisticRegression(C=params["C"], max_iter=MAX_ITER))
