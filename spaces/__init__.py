"""Search spaces: one module per architecture, each with ``suggest(trial)`` and ``build(params)``.

``ARCHITECTURES`` is the one registry; the CLI offers exactly its keys. Each module also has
``KIND`` (``"keras"``: trained by epochs; ``"sklearn"``: fitted on growing data subsets) and
``DEFAULTS``, its published configuration (``fmsearch run --enqueue`` starts from it). A
module with ``REQUIRES = (package, install hint)`` needs an optional extra; a Keras module with
``SHORT_RUN`` has its own changes to the configuration a short search starts from
(:func:`spaces.common.short_run_start`); one with ``BACKBONE`` (a layer's name) takes
pretrained weights there (``fmsearch run --weights``).
"""

from __future__ import annotations

from types import ModuleType

from spaces import (
    cnn,
    dnn,
    families,
    forest,
    knn,
    logreg,
    minicnn,
    mlp,
    resnet,
    resnet50v2,
    rnn,
    svm,
    tinyvgg,
    vggbn,
)
from spaces import xgboost as xgboost_space

ARCHITECTURES: dict[str, ModuleType] = {
    "mlp": mlp,
    "dnn": dnn,
    "cnn": cnn,
    "rnn": rnn,
    "resnet": resnet,
    "resnet50v2": resnet50v2,
    "tinyvgg": tinyvgg,
    "minicnn": minicnn,
    "vggbn": vggbn,
    "forest": forest,
    "knn": knn,
    "logreg": logreg,
    "svm": svm,
    "xgboost": xgboost_space,
}


def resolve(arch: str) -> ModuleType | families.Families:
    """The space ``--arch`` names: one architecture, or several searched as one study
    (``auto``, or comma-separated Keras architectures).

    Raises:
        ValueError: An unknown name, or a scikit-learn architecture among several.
    """
    names = families.parse(arch)
    if names is None:
        if arch not in ARCHITECTURES:
            raise ValueError(f"expected one of {', '.join(sorted(ARCHITECTURES))}, got {arch!r}")
        return ARCHITECTURES[arch]
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        raise ValueError(
            f"expected architectures among {', '.join(sorted(ARCHITECTURES))}, got "
            f"{', '.join(map(repr, unknown))}"
        )
    not_keras = [n for n in names if ARCHITECTURES[n].KIND != "keras"]
    if not_keras or len(set(names)) < 2:
        raise ValueError(
            "expected two or more different Keras architectures to search together, got "
            + (f"scikit-learn {', '.join(not_keras)}" if not_keras else repr(arch))
        )
    return families.Families(names)


__all__ = ["ARCHITECTURES", "resolve"]
