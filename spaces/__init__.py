"""Search spaces: one module per architecture, each with ``suggest(trial)`` and ``build(params)``.

``ARCHITECTURES`` is the one registry; the CLI offers exactly its keys.
"""

from __future__ import annotations

from types import ModuleType

from spaces import cnn, mlp, resnet

ARCHITECTURES: dict[str, ModuleType] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet": resnet,
}

__all__ = ["ARCHITECTURES"]
