"""The --engine registry: every name resolves to an Engine, an unknown one is one line."""

from __future__ import annotations

import pytest

from runners.errors import FmsearchError
from search.engines import ENGINES, engine_class
from search.engines._base import Engine


@pytest.mark.parametrize("name", list(ENGINES))
def test_every_registered_engine_is_an_engine(name):
    cls = engine_class(name)
    assert issubclass(cls, Engine)
    assert isinstance(cls.fills_pool, bool)


def test_only_the_pool_fills_the_pool_and_keras_tuner_checks_its_own_options():
    from search.run.config import SearchOptions
    from spaces import ARCHITECTURES

    assert engine_class("optuna").fills_pool and not engine_class("keras-tuner").fills_pool
    options = SearchOptions(arch="cnn", engine="keras-tuner", workers=2)
    with pytest.raises(FmsearchError, match=r"expected --workers 1 .* got --workers 2"):
        engine_class("keras-tuner").check(
            options, space=ARCHITECTURES["cnn"], objectives=("accuracy",)
        )
    changes = engine_class("keras-tuner").check(
        SearchOptions(arch="cnn", engine="keras-tuner"),
        space=ARCHITECTURES["cnn"],
        objectives=("accuracy",),
    )
    assert changes == {"sampler": "random", "pruner": "none", "study_name": "cnn-kt-hyperband"}


def test_an_unknown_engine_is_refused_in_one_line():
    with pytest.raises(
        FmsearchError, match=r"--engine must be one of optuna, keras-tuner, got 'x'"
    ):
        engine_class("x")
