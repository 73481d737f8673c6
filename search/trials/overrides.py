"""Changing a space without editing it: ``--fix name=value`` and ``--space-file spaces.yaml``.

A fixed hyperparameter goes through Optuna's ``PartialFixedSampler``, so it is recorded with
its space's own distribution and trials stay comparable with unfixed ones. A narrowed one is
suggested from the narrower range or fewer choices: the space's ``suggest`` gets a trial whose
``suggest_*`` calls apply the narrowing.

A space file maps hyperparameter names to a narrower range or a subset of choices::

    learning_rate: {low: 0.0005, high: 0.005}
    optimizer: [adam, adamw]
    mix: [none, cutmix]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from runners.errors import FmsearchError

if TYPE_CHECKING:
    import optuna


def _names(space: Mapping[str, BaseDistribution]) -> str:
    return ", ".join(space)


def _unknown(name: str, space: Mapping[str, BaseDistribution], where: str) -> FmsearchError:
    return FmsearchError(
        f"{where}: expected one of the space's hyperparameters ({_names(space)}), got {name!r}"
    )


def _choice(text: Any, dist: CategoricalDistribution, where: str) -> Any:
    """The choice of ``dist`` that ``text`` names (``true`` names True, ``64`` names 64)."""
    for choice in dist.choices:
        if str(choice).lower() == str(text).strip().lower():
            return choice
    choices = ", ".join(str(c) for c in dist.choices)
    raise FmsearchError(f"{where}: expected one of {choices}, got {text!r}")


def _number(text: Any, dist: FloatDistribution | IntDistribution, where: str) -> float | int:
    is_int = isinstance(dist, IntDistribution)
    try:
        value = float(text)
        if is_int:
            if not value.is_integer():
                raise ValueError
            value = int(value)
    except (TypeError, ValueError) as exc:
        kind = "an integer" if is_int else "a number"
        raise FmsearchError(f"{where}: expected {kind}, got {text!r}") from exc
    if not dist.low <= value <= dist.high:
        raise FmsearchError(f"{where}: expected a value in [{dist.low}, {dist.high}], got {value}")
    return value


def parse_fixed(items: Sequence[str], space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """``name=value`` pairs as hyperparameter values, checked against ``space``.

    Raises:
        FmsearchError: A pair without ``=``, an unknown name, or a value outside the space.
    """
    fixed: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise FmsearchError(f"--fix: expected name=value, got {item!r}")
        if name not in space:
            raise _unknown(name, space, "--fix")
        dist = space[name]
        where = f"--fix {name}"
        if isinstance(dist, CategoricalDistribution):
            fixed[name] = _choice(text, dist, where)
        else:
            fixed[name] = _number(text, dist, where)
    return fixed


def load_space_file(
    path: Path, space: Mapping[str, BaseDistribution]
) -> dict[str, BaseDistribution]:
    """The narrowed distributions a YAML space file asks for, checked against ``space``.

    Raises:
        FmsearchError: The file is unreadable or not a mapping, names an unknown
            hyperparameter, or widens a range or adds a choice.
    """
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FmsearchError(
            f"--space-file {path}: expected UTF-8 YAML, got byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}"
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise FmsearchError(f"--space-file {path}: {exc}") from exc
    if not isinstance(spec, dict):
        raise FmsearchError(
            f"--space-file {path}: expected a mapping of hyperparameter names, "
            f"got {type(spec).__name__}"
        )
    narrowed: dict[str, BaseDistribution] = {}
    for name, value in spec.items():
        if name not in space:
            raise _unknown(str(name), space, f"--space-file {path}")
        narrowed[name] = _narrow(space[name], value, f"--space-file {path}: {name}")
    return narrowed


def _narrow(dist: BaseDistribution, value: Any, where: str) -> BaseDistribution:
    if isinstance(dist, CategoricalDistribution):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise FmsearchError(f"{where}: expected at least one choice, got none")
        return CategoricalDistribution([_choice(v, dist, where) for v in values])
    if isinstance(value, list):
        raise FmsearchError(f"{where}: expected {{low: ..., high: ...}}, got a list")
    if not isinstance(value, dict) or not set(value) <= {"low", "high"}:
        raise FmsearchError(f"{where}: expected {{low: ..., high: ...}}, got {value!r}")
    low = _number(value.get("low", dist.low), dist, where)
    high = _number(value.get("high", dist.high), dist, where)
    if low > high:
        raise FmsearchError(f"{where}: expected low <= high, got {low} > {high}")
    if isinstance(dist, IntDistribution):
        return IntDistribution(int(low), int(high), log=dist.log, step=dist.step)
    return FloatDistribution(float(low), float(high), log=dist.log, step=dist.step)


class NarrowedTrial:
    """An Optuna trial whose ``suggest_*`` calls draw from narrowed distributions.

    Everything else (``number``, ``report``, ``set_user_attr``...) is the wrapped trial's.
    """

    def __init__(self, trial: optuna.Trial, narrowed: Mapping[str, BaseDistribution]) -> None:
        self._trial = trial
        self._narrowed = narrowed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> float:
        dist = self._narrowed.get(name)
        if isinstance(dist, FloatDistribution):
            low, high = dist.low, dist.high
        return self._trial.suggest_float(name, low, high, **kwargs)

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> int:
        dist = self._narrowed.get(name)
        if isinstance(dist, IntDistribution):
            low, high = dist.low, dist.high
        return self._trial.suggest_int(name, low, high, **kwargs)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        dist = self._narrowed.get(name)
        if isinstance(dist, CategoricalDistribution):
            choices = dist.choices
        return self._trial.suggest_categorical(name, choices)
