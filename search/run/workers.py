"""Many workers on one study: its settings in the storage, local worker processes, waiting.

A study's search settings (epochs, data subset, pinned and narrowed hyperparameters) live in
the study itself, so that ``fmsearch worker --study-name NAME`` on any host runs the same
search as the ``fmsearch run`` that created it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from runners.errors import FmsearchError
from search.engines.optuna_pool import add_budget
from search.engines.outages import Reaper, reap_stale_trials
from search.names import ARCH_ATTR, BASELINE_ATTR, OBJECTIVES_ATTR, SETTINGS_ATTR
from search.storage.locks import storage_lock
from search.storage.rdb import create_or_load_study, load_study
from search.tracking import Tracker

if TYPE_CHECKING:
    from runners.data import FashionMNIST, Split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """How a study's trials train: what every worker needs beyond the study's name.

    Attributes:
        sampler: A name in ``search.trials.choices.SAMPLERS``.
        pruner: A name in ``search.trials.choices.PRUNERS``.
        max_epochs: Epochs a trial trains at most.
        patience: Epochs without improvement before a trial ends (0: never).
        subset: Training images per trial (None: all).
        val_size: Validation images.
        seed: Sampler and weight seed (None: random).
        fixed: Pinned hyperparameters (``--fix``).
        narrowed: Narrowed distributions (``--space-file``), as Optuna's JSON.
        precision: A name in ``runners.precision.PRECISIONS`` (``auto`` resolves per host).
        deterministic: TensorFlow's op determinism in every trial (``--deterministic``): a
            seeded trial then trains to the same weights on the same machine.
        weights: Pretrained backbone weights every trial starts from (a file; None: none).
    """

    sampler: str = "tpe"
    pruner: str = "hyperband"
    max_epochs: int = 10
    patience: int = 3
    subset: int | None = None
    val_size: int = 10_000
    seed: int | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    narrowed: dict[str, str] = field(default_factory=dict)
    precision: str = "auto"
    deterministic: bool = False
    weights: str | None = None

    @classmethod
    def from_distributions(cls, *, narrowed: dict[str, Any], **kwargs: Any) -> SearchSettings:
        return cls(narrowed={k: distribution_to_json(d) for k, d in narrowed.items()}, **kwargs)

    def distributions(self) -> dict[str, Any]:
        return {k: json_to_distribution(v) for k, v in self.narrowed.items()}

    def split(self, data: FashionMNIST) -> Split:
        """The training and validation images every trial of the study sees, on any host."""
        from runners.data import split_train_val

        return split_train_val(
            data.x_train, data.y_train, val_size=self.val_size, subset=self.subset
        )


def prepare_study(
    *,
    storage: optuna.storages.BaseStorage,
    storage_url: str,
    study_name: str,
    arch: str,
    objectives: tuple[str, ...],
    settings: SearchSettings,
    n_trials: int,
    enqueue: Sequence[dict[str, Any]] = (),
    baseline: str | None = None,
) -> optuna.Study:
    """Create or resume the study, record its settings and fill its pool with ``n_trials``,
    the ``enqueue`` configurations first (each once per study); the first of them is the
    study's baseline (``BASELINE_ATTR``: ``baseline``, its label) when one is named.

    Done under the study's lock: Optuna breaks when several processes create one study
    at once (optuna#1092, #5385).
    """
    from search.trials.choices import make_pruner, make_sampler

    with storage_lock(storage_url, f"study:{study_name}"):
        study = create_or_load_study(
            storage=storage,
            study_name=study_name,
            arch=arch,
            sampler=make_sampler(settings.sampler, seed=settings.seed, fixed=settings.fixed),
            pruner=make_pruner(settings.pruner, max_epochs=_steps(arch, settings)),
            objectives=objectives,
        )
        if settings.seed is not None and study.trials:
            # A resumed study with the same seed would otherwise replay its first suggestions.
            study.sampler = make_sampler(
                settings.sampler, seed=settings.seed + len(study.trials), fixed=settings.fixed
            )
        _check_resumable(study, settings)
        study.set_user_attr(SETTINGS_ATTR, asdict(settings))
        for i, params in enumerate(enqueue):
            marks = {BASELINE_ATTR: baseline} if i == 0 and baseline else None
            study.enqueue_trial({**params, **settings.fixed}, user_attrs=marks,
                                skip_if_exists=True)  # fmt: skip
        reap_stale_trials(study)
        add_budget(study, n_trials)
    return study


def _check_resumable(study: optuna.Study, settings: SearchSettings) -> None:
    """Refuse settings under which a resumed study's trials would no longer compare: its
    values are accuracies on one validation set, which ``val_size`` chooses."""
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None or stored.get("val_size", settings.val_size) == settings.val_size:
        return
    raise FmsearchError(
        f"study {study.study_name!r} validates its trials on {stored['val_size']} images: "
        f"expected --val-size {stored['val_size']} to resume it, got {settings.val_size} "
        "(trials judged on different validation sets cannot compete; start a new "
        "--study-name)"
    )


def open_worker_study(
    *,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    wait: float = 0.0,
    seed_offset: int = 0,
) -> tuple[optuna.Study, str, tuple[str, ...], SearchSettings]:
    """Load a study made by ``fmsearch run``, with the sampler and pruner its settings name.

    Args:
        wait: Seconds to wait for the study to appear (workers that start before it).
        seed_offset: Added to the seed, so that workers started together sample apart.

    Returns:
        The study, its architecture, objectives and settings.

    Raises:
        FmsearchError: No such study (after ``wait``), or it was not made by fmsearch.
    """
    from search.trials.choices import make_pruner, make_sampler

    deadline = time.monotonic() + wait
    while True:
        try:
            study = load_study(storage=storage, study_name=study_name)
            if SETTINGS_ATTR in study.user_attrs:
                break
            missing = FmsearchError(
                f"study {study_name!r} has no fmsearch settings: expected a study made by "
                "`fmsearch run` (fmsearch 0.1 or later)"
            )
        except FmsearchError as exc:
            missing = exc
        if time.monotonic() >= deadline:
            raise missing
        time.sleep(1.0)
    arch = study.user_attrs[ARCH_ATTR]
    objectives = tuple(study.user_attrs.get(OBJECTIVES_ATTR, ["accuracy"]))
    settings = SearchSettings(**study.user_attrs[SETTINGS_ATTR])
    seed = None if settings.seed is None else settings.seed + len(study.trials) + seed_offset
    study.sampler = make_sampler(settings.sampler, seed=seed, fixed=settings.fixed)
    study.pruner = make_pruner(settings.pruner, max_epochs=_steps(arch, settings))
    return study, arch, objectives, settings


def _steps(arch: str, settings: SearchSettings) -> int:
    """What the pruner counts: epochs, or the growing data shares of scikit-learn trials."""
    from search.kinds import runner_for
    from spaces import resolve

    return runner_for(resolve(arch)).steps(settings.max_epochs)


def threads_per_worker(n_workers: int) -> int:
    """CPU threads each of ``n_workers`` local workers may use, so they share the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, n_workers))


def run_local_workers(
    command: list[str], *, n_workers: int, threads: int, env: dict[str, str] | None = None
) -> list[int]:
    """Run ``n_workers`` copies of the ``fmsearch worker`` ``command`` and wait for them.

    Each gets ``--threads`` and a ``--worker-index``, and ``env`` on top of this process's
    environment; Ctrl-C reaches them all (one process group), and each stops cleanly.

    Returns:
        Their exit codes.
    """
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads)}
    processes = [
        subprocess.Popen([*command, "--threads", str(threads), "--worker-index", str(i)], env=env)
        for i in range(n_workers)
    ]
    try:
        return [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in processes:
            p.wait()
        raise


def wait_for_pool(
    study: optuna.Study,
    *,
    tracker: Tracker,
    timeout: float | None = None,
    hard: bool = False,
    poll_seconds: float = 5.0,
) -> None:
    """Wait until other workers have run every trial in the study's pool (``--workers 0``).

    Meanwhile this process reaps stale trials like any worker, and ends their MLflow runs.

    Args:
        timeout: Seconds after which no trial that has not started is waited for
            (``--timeout``); None: no limit.
        hard: Stop waiting at ``timeout`` for the running ones too (``--budget-hours``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with Reaper(study, tracker):
        while True:
            reap_stale_trials(study)
            late = deadline is not None and time.monotonic() >= deadline
            states = (TrialState.RUNNING,) if late else (TrialState.WAITING, TrialState.RUNNING)
            left = study.get_trials(deepcopy=False, states=states)
            if not left or (late and hard):
                break
            pause = poll_seconds
            if deadline is not None and not late:  # wake at the deadline, not after it
                pause = min(pause, max(deadline - time.monotonic(), 0.05))
            time.sleep(pause)
    if late:
        unstarted = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        logger.warning(
            "stopped waiting after %.0f s: %d trial(s) no worker started%s", timeout, unstarted,
            f", {len(left)} still running" if left else "",
        )  # fmt: skip


def resident_mib() -> float | None:
    """This process's resident memory in MiB; None where the OS does not say (no /proc)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Recycler:
    """An Optuna callback that stops this worker once it has run ``max_trials`` trials or
    holds ``max_memory_mib`` of memory, so that it can start again as a new process.

    A long-lived process keeps memory from trial to trial (17-21 MiB per small CNN trial,
    measured by ``benchmarks.trial_memory``, whatever Keras' own cleanup frees): a worker that
    runs for a week would grow without bound. A new process starts from nothing.

    Attributes:
        trials: Trials this process has finished (any state).
        reason: Why the worker stopped (None: it did not).
    """

    def __init__(self, *, max_trials: int | None, max_memory_mib: float | None) -> None:
        self._max_trials = max_trials
        self._max_memory_mib = max_memory_mib
        self.trials = 0
        self.reason: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.trials += 1
        if self._max_trials and self.trials >= self._max_trials:
            self.reason = f"{self.trials} trials"
        elif self._max_memory_mib:
            rss = resident_mib()
            if rss is not None and rss >= self._max_memory_mib:
                self.reason = f"{rss:.0f} MiB resident (limit {self._max_memory_mib:g})"
        if self.reason is not None:
            study.stop()


def pool_open(study: optuna.Study) -> bool:
    """Whether the study still has trials to run or running (which may come back as retries)."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


def worker_command() -> list[str]:
    """How to start ``fmsearch`` again with this Python."""
    return [sys.executable, "-m", "search"]
