"""Random forest (scikit-learn) on the pixels, optionally behind PCA.

Hyperparameters:
    pca_components (categorical, 0 / 16 / 32 / 64 / 128): PCA components, 0 for none.
    n_estimators (int, 50 to 400, log): trees.
    max_depth (int, 8 to 64, log): depth limit of each tree.
    max_features (categorical, sqrt / log2): features tried at each split.
    min_samples_leaf (int, 1 to 8, log): smallest leaf.
    criterion (categorical, gini / entropy): split quality.
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
# As in the Fashion-MNIST authors' scikit-learn benchmark: 100 trees, entropy, no depth limit
# (64 is deeper than any tree grows here).
DEFAULTS = {
    "pca_components": 0, "n_estimators": 100, "max_depth": 64, "max_features": "sqrt",
    "min_samples_leaf": 1, "criterion": "entropy",
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one random forest configuration."""
    return {
        **suggest_pca(trial),
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
        "max_depth": trial.suggest_int("max_depth", 8, 64, log=True),
        "max_features": trial.suggest_categorical("max_features", ("sqrt", "log2")),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 8, log=True),
        "criterion": trial.suggest_categorical("criterion", ("gini", "entropy")),
    }


def build(params: dict[str, Any], **_: Any) -> Any:
    """Build the (unfitted) forest pipeline that ``params`` describes."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        max_features=params["max_features"],
        min_samples_leaf=params["min_samples_leaf"],
        criterion=params["criterion"],
        n_jobs=-1,
        random_state=0,
    )
    return sklearn_pipeline(params, model)
