"""Several architectures searched as one conditional space (``--arch auto``, ``--arch a,b,c``).

Each trial first picks its family, then suggests that family's hyperparameters. The shared
hyperparameters (``spaces.common``: learning rate, batch size, optimizer, schedule, smoothing,
L2, dropout, augmentation) keep their names, so Optuna learns them across families; every
other one is named ``family.name`` (``resnet.n_blocks``), since two families may give one name
different ranges, which Optuna refuses within a study.

Hyperparameters:
    arch (categorical, the families): which architecture the trial builds.
    FAMILY.NAME: that family's own hyperparameters, see its module.
    The shared ones: see :mod:`spaces.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from spaces.common import short_run_start

if TYPE_CHECKING:
    import keras
    import optuna

KIND = "keras"
FAMILY_PARAM = "arch"
# What `--arch auto` searches: every Keras family that trains at a useful speed on a CPU.
# ResNet (68 images/s here, a twelfth of VGG-BN at half width) and the LSTM are left to
# searches that name them.
AUTO = ("mlp", "dnn", "cnn", "minicnn", "tinyvgg", "vggbn")
SHARED = frozenset(
    {
        "learning_rate", "batch_size", "optimizer", "lr_schedule", "plateau_factor",
        "plateau_patience", "label_smoothing", "class_weights", "shirt_weight", "use_l2",
        "l2", "dropout", "mix", "mix_prob", "mix_alpha", "shift", "shift_factor", "rotation",
        "rotation_degrees", "zoom", "zoom_factor", "flip", "erasing", "erasing_prob", "shear",
        "shear_factor",
    }
)  # fmt: skip


def own_name(family: str, name: str) -> str:
    """The study's name for ``family``'s hyperparameter ``name``."""
    return name if name in SHARED else f"{family}.{name}"


def own_params(params: dict[str, Any], family: str) -> dict[str, Any]:
    """Of values under the study's names, ``family``'s under its own (``own_name`` undone)."""
    prefix = f"{family}."
    return {
        k.removeprefix(prefix): v for k, v in params.items() if k in SHARED or k.startswith(prefix)
    }


class _FamilyTrial:
    """A trial seen by one family's ``suggest``: its own names get the family's prefix."""

    def __init__(self, trial: Any, family: str) -> None:
        self._trial = trial
        self._family = family

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._trial.suggest_float(own_name(self._family, name), *args, **kwargs)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._trial.suggest_int(own_name(self._family, name), *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._trial.suggest_categorical(own_name(self._family, name), choices)


class Families:
    """A search space over several Keras architectures, used like a space module.

    Args:
        names: Keys of ``spaces.ARCHITECTURES``, all Keras architectures.
    """

    KIND = KIND
    REQUIRES = None
    # Each family's own SHORT_RUN applies in `starts(short=True)`.
    SHORT_RUN: ClassVar[dict[str, Any]] = {}
    BACKBONE = None

    def __init__(self, names: Sequence[str]) -> None:
        from spaces import ARCHITECTURES

        self.names = tuple(names)
        self._modules = {name: ARCHITECTURES[name] for name in self.names}
        # The first family's published configuration; `starts` has all of them.
        self.DEFAULTS = self.start(self.names[0])

    def start(self, family: str, *, short: bool = False) -> dict[str, Any]:
        """``family``'s published configuration, under the study's names (``short``: retuned
        for a run of a few epochs, see :func:`spaces.common.short_run_start`)."""
        module = self._modules[family]
        config = short_run_start(module) if short else module.DEFAULTS
        return {FAMILY_PARAM: family, **{own_name(family, k): v for k, v in config.items()}}

    def starts(self, *, short: bool = False) -> list[dict[str, Any]]:
        return [self.start(family, short=short) for family in self.names]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest a family, then its configuration, under the study's names."""
        family = trial.suggest_categorical(FAMILY_PARAM, self.names)
        own = self._modules[family].suggest(_FamilyTrial(trial, family))
        return {FAMILY_PARAM: family, **{own_name(family, k): v for k, v in own.items()}}

    def build(
        self,
        params: dict[str, Any],
        *,
        input_shape: tuple[int, ...] = (28, 28, 1),
        num_classes: int = 10,
    ) -> keras.Model:
        """Build the family's model that ``params`` (from :meth:`suggest`) describes."""
        family = params[FAMILY_PARAM]
        own = own_params(params, family)
        return self._modules[family].build(own, input_shape=input_shape, num_classes=num_classes)


def parse(text: str) -> list[str] | None:
    """The families ``--arch`` names: ``auto``, or several comma-separated; None for one."""
    if text == "auto":
        return list(AUTO)
    if "," not in text:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]
