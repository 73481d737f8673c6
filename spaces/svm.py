"""Support vector machine (scikit-learn ``SVC``) on the pixels, optionally behind PCA.

Kernel SVMs scale with the square of the training set: use PCA and ``--subset`` to keep a
trial in minutes. The served model's probabilities are a softmax of the one-vs-rest decision
values (``SVC(probability=True)`` would cost a 5-fold fit per trial).

Hyperparameters:
    pca_components (categorical, 0 / 16 / 32 / 64 / 128): PCA components, 0 for none.
    C (float, 0.1 to 100, log): penalty of margin violations.
    kernel (categorical, rbf / poly): the kernel.
    gamma (float, 1e-3 to 1e-1, log): kernel coefficient. scikit-learn's ``"scale"``
        (1 / (n_features * variance)) is about 0.013 on these pixels, with or without PCA,
        because PCA keeps most of the variance in fewer features.
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
# The Fashion-MNIST authors' best SVC setting: RBF kernel, C = 10 (PCA added for speed).
DEFAULTS = {"pca_components": 64, "C": 10.0, "kernel": "rbf", "gamma": 0.013}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one SVM configuration."""
    return {
        **suggest_pca(trial),
        "C": trial.suggest_float("C", 0.1, 100.0, log=True),
        "kernel": trial.suggest_categorical("kernel", ("rbf", "poly")),
        "gamma": trial.suggest_float("gamma", 1e-3, 1e-1, log=True),
    }


def build(params: dict[str, Any], **_: Any) -> Any:
    """Build the (unfitted) SVM pipeline that ``params`` describes."""
    from sklearn.svm import SVC

    # break_ties: predict is then the argmax of the decision values that the served model
    # turns into probabilities, so its class and its top probability always agree.
    model = SVC(
        C=params["C"],
        kernel=params["kernel"],
        gamma=params["gamma"],
        break_ties=True,
        random_state=0,
    )
    return sklearn_pipeline(params, model)
