"""Several architectures as one conditional space: names, rebuilds, starts, refusals."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from spaces import resolve
from spaces.families import AUTO, FAMILY_PARAM, Families, own_name


def test_each_trial_builds_its_family_under_the_study_s_names():
    space = resolve("mlp,cnn")
    assert isinstance(space, Families) and space.names == ("mlp", "cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(6):
        trial = study.ask()
        params = space.suggest(trial)
        assert params == trial.params  # what Optuna stores is what builds the model
        family = params[FAMILY_PARAM]
        seen.add(family)
        assert all("." not in k or k.startswith(f"{family}.") for k in params)
        assert "learning_rate" in params and own_name(family, "learning_rate") == "learning_rate"
        # The winner is rebuilt from its stored params alone.
        again = space.suggest(optuna.trial.FixedTrial(trial.params))
        model = space.build(again)
        assert model.name == family
        assert model.predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0).shape == (2, 10)
        study.tell(trial, 0.5)
    assert seen == {"mlp", "cnn"}


def test_starts_are_each_family_s_published_configuration():
    space = resolve("auto")
    assert space.names == AUTO
    starts = space.starts()
    assert [s[FAMILY_PARAM] for s in starts] == list(AUTO)
    assert starts[0]["mlp.n_units_l0"] == 256 and starts[0] == space.DEFAULTS
    rebuilt = space.suggest(optuna.trial.FixedTrial(starts[1]))
    assert rebuilt == starts[1]
    # Retuned for few epochs, each start takes its family's own changes, under the study's names.
    short = space.starts(short=True)
    assert short[0]["mlp.n_units_l0"] == 512 and short[0]["lr_schedule"] == "cosine"
    assert short[1]["lr_schedule"] == "cosine" and short[1]["batch_size"] == 64
    assert space.suggest(optuna.trial.FixedTrial(short[0])) == short[0]


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("mlp,svm", r"expected two or more different Keras architectures .*got scikit-learn svm"),
        ("mlp,mlp", r"expected two or more different Keras architectures .*got 'mlp,mlp'"),
        ("mlp,nope", r"expected architectures among .*got 'nope'"),
        ("nope", r"expected one of cnn, .*got 'nope'"),
    ],
)
def test_what_cannot_be_searched_together_is_refused(arch, message):
    with pytest.raises(ValueError, match=message):
        resolve(arch)
