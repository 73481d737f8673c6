"""The contract of an architecture module: what every entry of ``spaces.ARCHITECTURES``
provides, checked when the registry is built (:func:`checked`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import optuna

KINDS = ("keras", "sklearn")


@runtime_checkable
class Architecture(Protocol):
    """An architecture: what to search, and how to build the model.

    Attributes:
        KIND: ``"keras"`` (trained by epochs) or ``"sklearn"`` (fitted on growing data shares).
        DEFAULTS: Its published configuration, a full point of the space: the first trial of
            every new study (``fmsearch run --enqueue``).
        REQUIRES: ``(package, install hint)`` of an optional extra it needs, or None.
        SHORT_RUN: Its own changes to the configuration a short search starts from
            (:func:`spaces.common.short_run_start`); empty for none.
        BACKBONE: The layer that takes pretrained weights (``fmsearch run --weights``), or None.
    """

    KIND: str
    DEFAULTS: dict[str, Any]
    REQUIRES: tuple[str, str] | None
    SHORT_RUN: dict[str, Any]
    BACKBONE: str | None

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Only ``trial.suggest_*`` calls: one configuration."""
        ...

    def build(self, params: dict[str, Any], **shape: Any) -> Any:
        """The model ``params`` describe (pure: it never sees a trial)."""
        ...


def checked(name: str, space: Any) -> Any:
    """``space`` once it keeps the :class:`Architecture` contract.

    Raises:
        TypeError: A member missing, or an unknown ``KIND``.
    """
    members = [*Architecture.__annotations__, "suggest", "build"]
    missing = [m for m in members if not hasattr(space, m)]
    if missing:
        raise TypeError(f"architecture {name!r}: expected {', '.join(members)}, missing "
                        f"{', '.join(missing)}")  # fmt: skip
    if space.KIND not in KINDS:
        raise TypeError(f"architecture {name!r}: expected KIND in {KINDS}, got {space.KIND!r}")
    return space
