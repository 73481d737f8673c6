"""Search spaces: one module per architecture, each with ``suggest(trial)`` and ``build(params)``.

``ARCHITECTURES`` is the one registry; the CLI offers exactly its keys. Every module keeps the
:class:`spaces._base.Architecture` contract (``KIND``, ``DEFAULTS``, ``REQUIRES``,
``SHORT_RUN``, ``BACKBONE``, ``suggest``, ``build``), checked as the registry is built.
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
from spaces._base import Architecture, checked

ARCHITECTURES: dict[str, ModuleType] = {
    name: checked(name, module)
    for name, module in {
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
    }.items()
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


__all__ = ["ARCHITECTURES", "Architecture", "checked", "resolve"]
