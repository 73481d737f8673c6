"""Gradient-boosted trees (XGBoost) on the pixels, optionally behind PCA.

An optional extra: ``pip install 'fmsearch[xgboost]'`` (the CPU build, ``xgboost-cpu``).

Hyperparameters:
    pca_components (categorical, 0 / 16 / 32 / 64 / 128): PCA components, 0 for none.
    max_depth (int, 3 to 10): depth of each tree.
    n_estimators (int, 50 to 500, log): boosting rounds.
    learning_rate (float, 0.01 to 0.3, log): shrinkage of each round (XGBoost's ``eta``;
        its own range, not the neural networks' shared one).
    subsample (float, 0.5 to 1.0): share of the training rows each tree sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import sklearn_pipeline, suggest_pca

if TYPE_CHECKING:
    import optuna

KIND = "sklearn"
SHORT_RUN: dict[str, Any] = {}
BACKBONE = None
REQUIRES = ("xgboost", "pip install 'fmsearch[xgboost]'")
# XGBoost's own defaults, with 200 rounds.
DEFAULTS = {
    "pca_components": 0, "max_depth": 6, "n_estimators": 200, "learning_rate": 0.3,
    "subsample": 1.0,
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one XGBoost configuration."""
    return {
        **suggest_pca(trial),
        "max_depth": trial.suggest_int("max_depth", 3, 10),
        "n_estimators": trial.suggest_int("n_estimators", 50, 500, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
    }


def build(params: dict[str, Any], **_: Any) -> Any:
    """Build the (unfitted) XGBoost pipeline that ``params`` describes."""
    from xgboost import XGBClassifier

    model = XGBClassifier(
        max_depth=params["max_depth"],
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        subsample=params["subsample"],
        tree_method="hist",
        n_jobs=-1,
        random_state=0,
    )
    return sklearn_pipeline(params, model)
