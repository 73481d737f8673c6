"""What picks and runs a study's trials in one process: the Optuna pool or Keras Tuner, each an
:class:`~search.engines._base.Engine` over the same trial lifecycle.

``ENGINES`` is the registry of ``--engine``: a name -> where its class lives, imported only when
a run asks for it (``fmsearch --help`` stays instant). To add an engine, see
docs/contributing.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from runners.errors import FmsearchError

if TYPE_CHECKING:
    from search.engines._base import Engine

ENGINES: dict[str, str] = {
    "optuna": "search.engines.optuna_pool:PoolEngine",
    "keras-tuner": "search.engines.keras_tuner:KerasTunerEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class ``--engine name`` picks.

    Raises:
        FmsearchError: A name not in ``ENGINES``.
    """
    if name not in ENGINES:
        raise FmsearchError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
    module, _, attr = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
