"""The architecture contract (spaces._base.Architecture), checked as the registry is built."""

from __future__ import annotations

import types

import pytest

from spaces import ARCHITECTURES, Architecture, checked


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_registered_architecture_keeps_the_contract(name):
    space = ARCHITECTURES[name]
    assert isinstance(space, Architecture)
    assert space.REQUIRES is None or len(space.REQUIRES) == 2
    assert set(space.SHORT_RUN) <= set(space.DEFAULTS)


def test_a_module_missing_a_member_or_with_an_unknown_kind_is_refused():
    broken = types.ModuleType("broken")
    broken.KIND, broken.DEFAULTS, broken.suggest = "keras", {}, lambda trial: {}
    with pytest.raises(TypeError, match=r"'broken': expected .* missing REQUIRES, SHORT_RUN, "
                                        r"BACKBONE, build"):  # fmt: skip
        checked("broken", broken)
    broken.REQUIRES, broken.SHORT_RUN, broken.BACKBONE = None, {}, None
    broken.build = lambda params, **shape: None
    assert checked("broken", broken) is broken
    broken.KIND = "torch"
    with pytest.raises(TypeError, match=r"expected KIND in \('keras', 'sklearn'\), got 'torch'"):
        checked("broken", broken)
