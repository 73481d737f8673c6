"""Search spaces: one module per architecture, each with ``suggest(trial)`` and ``build(params)``.

``ARCHITECTURES`` is the one registry; the CLI offers exactly its keys. Each module also has
``KIND`` (``"keras"``: trained by epochs; ``"sklearn"``: fitted on growing data subsets) and
``DEFAULTS``, its published configuration (``fmsearch run --enqueue`` starts from it). A
module with ``REQUIRES = (package, install hint)`` needs an optional extra.
"""

from __future__ import annotations

from types import ModuleType

from spaces import cnn, dnn, forest, knn, logreg, minicnn, mlp, resnet, rnn, svm, tinyvgg, vggbn
from spaces import xgboost as xgboost_space

ARCHITECTURES: dict[str, ModuleType] = {
    "mlp": mlp,
    "dnn": dnn,
    "cnn": cnn,
    "rnn": rnn,
    "resnet": resnet,
    "tinyvgg": tinyvgg,
    "minicnn": minicnn,
    "vggbn": vggbn,
    "forest": forest,
    "knn": knn,
    "logreg": logreg,
    "svm": svm,
    "xgboost": xgboost_space,
}

__all__ = ["ARCHITECTURES"]
