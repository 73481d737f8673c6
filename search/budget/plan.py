"""A search planned from its time budget: search small, train the winners large.

``fmsearch run --arch A --budget-hours H`` measures how fast this host trains the
architecture (:func:`runners.throughput.measure_throughput`), then spends the budget the way
a practitioner would: a ladder of rungs (successive halving on growing stratified subsets of
the training images, a few epochs each), then the top configurations trained on all the
images with a long one-cycle schedule, then promotion. :func:`make_plan` is the arithmetic,
free of TensorFlow so that it is cheap to test and to show.

How the budget is split:

- promotion and the report keep a reserve (``RESERVE_SECONDS`` plus the test set's
  prediction time);
- the final training gets up to ``FINAL_SHARE`` of the rest: ``TOP_K`` models (``--top-k``)
  for ``FINAL_EPOCHS`` epochs each, fewer models when they do not fit, then fewer epochs;
- with ``retrain_on_all``, the same share also holds one more training of the chosen model
  on the training and validation images together, for the final epochs;
- where the first rung is capped (``MAX_FIRST_RUNG_CONFIGS``), the time it cannot use
  lengthens the finals instead, up to ``MAX_FINAL_EPOCHS``;
- the ladder gets the remainder. Rung ``r`` trains on ``N / eta**(R-1-r)`` images (the top
  rung on all ``N``) for ``FIRST_RUNG_EPOCHS + r`` epochs; each rung keeps the best
  ``1/eta`` of the one below, so every rung costs about the same. Rungs are dropped from the
  top until the top rung still gets one configuration;
- a ladder too thin to beat a published recipe (``THIN_LADDER_CONFIGS``) is not climbed:
  the published configuration trains once on the lowest rung, then all the rest of the
  budget goes to its one final training.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from runners.errors import FmsearchError
from search.budget.costs import (
    MAX_FINAL_EPOCHS,
    TRIAL_OVERHEAD_SECONDS,
    FinalCosts,
    epoch_seconds,
    epochs_that_fit,
    finals_that_fit,
    reserve_seconds,
)

REDUCTION_FACTOR = 3
# The smallest rung: on fewer images a few epochs are too few steps for BatchNorm networks to
# leave chance, so the rung would rank how fast a configuration starts, not where it ends
# (docs/budgets.md, "The ladder"). A tiny data set asks for N / eta**2 instead.
MIN_RUNG_IMAGES = 5000
FIRST_RUNG_EPOCHS = 3
TOP_K = 3
FINAL_SHARE = 0.6
# More first-rung configurations than this and the spare time goes to the final training.
MAX_FIRST_RUNG_CONFIGS = 300
# Fewer first-rung configurations than this (two halvings' worth) and the ladder's pick is
# noise next to a published recipe: the plan trains the published configuration alone, long
# (benchmarks/results/equal_budget.md: thin ladders lost to random search, wide ones won).
THIN_LADDER_CONFIGS = REDUCTION_FACTOR**2
# A distilled single model is served in its ensemble's place when it is at most this far
# below it on validation: one model's latency for a fifth of a point at most.
DISTILL_TOLERANCE = 0.002


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder.

    Attributes:
        train_images: Training images (a stratified prefix: each rung's images hold the ones
            below).
        epochs: Epochs a configuration trains at this rung.
        configs: Configurations planned to reach it.
        trial_seconds: Estimated seconds per trial.
    """

    train_images: int
    epochs: int
    configs: int
    trial_seconds: float


@dataclass(frozen=True)
class Plan:
    """How a budgeted search spends its time (all times in seconds).

    Attributes:
        budget_seconds: The whole command's budget.
        started_at: When the command started (Unix time).
        train_images_per_s: Measured training rate on this host.
        eval_images_per_s: Measured prediction rate.
        probe_seconds: What the measurement took.
        train_images: All training images (the top rung and the final training).
        val_images: Validation images every trial is judged on.
        reduction_factor: ``eta``: each rung keeps the best 1/eta of the one below.
        rungs: The ladder, smallest first.
        search_seconds: Time for the ladder.
        top_k: Configurations trained at full fidelity after the ladder.
        final_epochs: Epochs of each final training.
        final_seconds: Time for the final training.
        reserve_seconds: Time kept for the ensemble decision, promotion and the report.
        retrain_seconds: Time kept, after the finals, to train the chosen model again on
            the training and validation images together (``--final-on-all-data``; 0: not
            asked for).
        distill_seconds: Time kept, within the finals' time, to distill their ensemble
            into one model when the ensemble wins (0: none, with one final, with
            ``--final-on-all-data`` or ``--no-distill``).
        estimated_seconds: What the plan expects the whole command to take.
    """

    budget_seconds: float
    started_at: float
    train_images_per_s: float
    eval_images_per_s: float
    probe_seconds: float
    train_images: int
    val_images: int
    reduction_factor: int
    rungs: tuple[Rung, ...]
    search_seconds: float
    top_k: int
    final_epochs: int
    final_seconds: float
    reserve_seconds: float
    estimated_seconds: float
    notes: tuple[str, ...] = field(default=())
    retrain_seconds: float = 0.0
    distill_seconds: float = 0.0

    def students(self, finals: int) -> int:
        """Distilled models the plan trains after ``finals`` final models (0 or 1): one where
        it kept time for it and the finals can make an ensemble."""
        return int(bool(self.distill_seconds) and finals >= 2)

    @property
    def thin_ladder(self) -> bool:
        """Whether the ladder starts with too few configurations to beat a published recipe
        (``THIN_LADDER_CONFIGS``): its final then trains the study's baseline."""
        return _thin(self.rungs)

    @property
    def search_ends_at(self) -> float:
        """Unix time after which no ladder trial starts."""
        return self.started_at + self.probe_seconds + self.search_seconds

    @property
    def finals_end_at(self) -> float:
        """Unix time by which the final training must be done."""
        return self.retrain_ends_at - self.retrain_seconds

    @property
    def retrain_ends_at(self) -> float:
        """Unix time by which the retraining on all images must be done."""
        return self.started_at + self.budget_seconds - self.reserve_seconds

    def epoch_seconds(self, train_images: int) -> float:
        """Estimated seconds of one epoch on ``train_images``, validation included."""
        return epoch_seconds(
            train_images, self.val_images, self.train_images_per_s, self.eval_images_per_s
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data["rungs"] = tuple(Rung(**r) for r in data["rungs"])
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)

    def describe(self, *, arch: str) -> str:
        """The plan as the CLI prints it."""
        eta = time.strftime("%H:%M", time.localtime(self.started_at + self.estimated_seconds))
        lines = [
            f"plan for {arch} in {span(self.budget_seconds)} (this host trains "
            f"{self.train_images_per_s:,.0f} images/s and predicts {self.eval_images_per_s:,.0f} "
            f"images/s; set-up and measurement took {self.probe_seconds:.0f} s):",
            f"  search {span(self.search_seconds)}: "
            + ("the published configuration alone" if self.thin_ladder else
               f"successive halving over {len(self.rungs)} rung(s), each keeping the best "
               f"1/{self.reduction_factor}"),
        ]  # fmt: skip
        for r, rung in enumerate(self.rungs):
            lines.append(
                f"    rung {r}: {rung.train_images:>6,} images x {rung.epochs} epochs, "
                f"{rung.configs} configuration(s), ~{rung.trial_seconds:.0f} s each"
            )
        if self.top_k:
            lines.append(
                f"  final  {span(self.final_seconds)}: the top {self.top_k} on all "
                f"{self.train_images:,} images for {self.final_epochs} epochs each "
                "(one-cycle schedule, best epoch kept)"
            )
        if self.distill_seconds:
            lines.append(
                f"  distill {span(self.distill_seconds)}: if an ensemble wins, one model of its "
                "best member's configuration trained on its soft labels, served instead when "
                f"within {100 * DISTILL_TOLERANCE:.1f} points of it on validation"
            )
        if self.retrain_seconds:
            lines.append(
                f"  retrain {span(self.retrain_seconds)}: the chosen model again on all "
                f"{self.train_images + self.val_images:,} images (validation included) for its "
                "best epoch count"
            )
        lines.append(f"  ensemble decision, promotion, report: {span(self.reserve_seconds)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append(f"  estimated {span(self.estimated_seconds)}: done about {eta}")
        return "\n".join(lines)


def span(seconds: float) -> str:
    """Seconds as people read them: seconds, minutes or hours."""
    if seconds >= 5400:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 90:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def rung_sizes(train_images: int, *, eta: int = REDUCTION_FACTOR) -> list[int]:
    """Training images of every possible rung, smallest first; the last is all of them."""
    floor = min(MIN_RUNG_IMAGES, train_images // eta**2)
    sizes = [train_images]
    while round(sizes[0] / eta) >= max(floor, 1):
        sizes.insert(0, round(sizes[0] / eta))
    return sizes


def make_plan(
    *,
    budget_seconds: float,
    train_images_per_s: float,
    eval_images_per_s: float,
    train_images: int,
    val_images: int,
    started_at: float,
    probe_seconds: float = 0.0,
    max_rung_epochs: int = 10,
    top_k: int = TOP_K,
    eta: int = REDUCTION_FACTOR,
    retrain_on_all: bool = False,
    distill: bool = False,
) -> Plan:
    """Plan a search of ``budget_seconds`` on a host with the measured rates.

    Args:
        budget_seconds: The whole command's budget, measurement and promotion included.
        train_images_per_s: Measured training rate.
        eval_images_per_s: Measured prediction rate.
        train_images: Training images of the final training (the top rung's).
        val_images: Validation images every epoch is judged on.
        started_at: Unix time the command started.
        probe_seconds: Time spent measuring (already gone from the budget).
        max_rung_epochs: Epochs a ladder trial trains at most (``--max-epochs``).
        top_k: Configurations to train at full fidelity, at most.
        eta: Reduction factor between rungs.
        retrain_on_all: Keep time to train the chosen model again on the training and
            validation images together, after the finals.
        distill: Keep time to distill the finals' ensemble into one model (not with
            ``retrain_on_all``: the retraining leaves no validation to judge it on).

    Raises:
        FmsearchError: The budget cannot hold one trial on the smallest rung.
    """
    if top_k < 1:
        raise FmsearchError(f"top_k must be >= 1, got {top_k}")
    reserve = reserve_seconds(top_k=top_k, val_images=val_images, eval_rate=eval_images_per_s)
    costs = FinalCosts(
        epoch_full=epoch_seconds(train_images, val_images, train_images_per_s,
                                  eval_images_per_s),
        epoch_all=epoch_seconds(train_images + val_images, val_images, train_images_per_s,
                                 eval_images_per_s),
        retrain_on_all=retrain_on_all,
        distill=distill and not retrain_on_all,
    )  # fmt: skip
    sizes = rung_sizes(train_images, eta=eta)

    def trial_seconds(r: int, n: int) -> float:
        e = min(max_rung_epochs, FIRST_RUNG_EPOCHS + r)
        epoch = epoch_seconds(n, val_images, train_images_per_s, eval_images_per_s)
        return e * epoch + TRIAL_OVERHEAD_SECONDS

    split = _split(
        budget_seconds - probe_seconds - reserve,
        costs=costs, sizes=sizes, trial_seconds=trial_seconds, top_k=top_k, eta=eta,
    )  # fmt: skip
    if split.first < 1:
        needed = probe_seconds + reserve + trial_seconds(0, sizes[0])
        raise _no_room(needed=needed, probe_seconds=probe_seconds, budget_seconds=budget_seconds)
    student = costs.student(split.top_k, split.epochs)
    rungs = tuple(
        Rung(n, min(max_rung_epochs, FIRST_RUNG_EPOCHS + r), split.first // eta**r,
             trial_seconds(r, n))
        for r, n in enumerate(split.ladder)
    )  # fmt: skip
    return Plan(
        budget_seconds=budget_seconds,
        started_at=started_at,
        train_images_per_s=train_images_per_s,
        eval_images_per_s=eval_images_per_s,
        probe_seconds=probe_seconds,
        train_images=train_images,
        val_images=val_images,
        reduction_factor=eta,
        rungs=rungs,
        search_seconds=split.search,
        top_k=split.top_k,
        final_epochs=split.epochs,
        final_seconds=split.final - costs.retrain(split.epochs) - student,
        reserve_seconds=reserve,
        estimated_seconds=probe_seconds + split.search + split.final + reserve,
        notes=_notes(split, rungs=rungs, train_images=train_images),
        retrain_seconds=costs.retrain(split.epochs) if split.top_k else 0.0,
        distill_seconds=student,
    )


@dataclass(frozen=True)
class _Split:
    """The time after the probe and the reserve, divided: the rungs climbed (their image
    counts), first-rung configurations, the ladder's seconds, and the finals (how many, their
    epochs, their seconds with the retraining)."""

    ladder: list[int]
    first: int
    search: float
    top_k: int
    epochs: int
    final: float
    notes: list[str]


def _split(available: float, *, costs: FinalCosts, sizes: list[int], trial_seconds, top_k: int,
           eta: int) -> _Split:  # fmt: skip
    """Finals first (up to ``FINAL_SHARE``), the ladder the rest; ``first`` < 1 when not even
    one trial fits."""
    k, epochs, notes = finals_that_fit(costs, share=FINAL_SHARE * max(available, 0.0), top_k=top_k)
    final = costs.final(k, epochs) if k else 0.0
    search = available - final
    ladder, per_config, first = _fit_ladder(sizes, search, trial_seconds=trial_seconds, eta=eta)
    if first < 1 and k:
        # Room for a trial but not for a trial and a final: the best trial is the result.
        k, epochs, final, search = 0, 0, 0.0, available
        notes = ["no final training: the budget holds one search trial, not a final too"]
        ladder, per_config, first = _fit_ladder(sizes, search, trial_seconds=trial_seconds,
                                                eta=eta)  # fmt: skip
    if first > MAX_FIRST_RUNG_CONFIGS:
        spare = (first - MAX_FIRST_RUNG_CONFIGS) * per_config
        first, search = MAX_FIRST_RUNG_CONFIGS, MAX_FIRST_RUNG_CONFIGS * per_config
        if k:  # the spare time goes to longer finals
            epochs += min(MAX_FINAL_EPOCHS - epochs, int(spare // costs.epoch(k)))
            final = costs.final(k, epochs)
    if k and 1 <= first < THIN_LADDER_CONFIGS:
        # Too few configurations for the ladder's pick to beat the published one: that one
        # alone, once on the lowest rung (it must train, and its epochs are timed), then the
        # rest of the budget in one long final, as a practitioner would spend it.
        notes = [
            f"too little time for a search ({first} first-rung configurations would fit): the "
            "published configuration, trained long"
        ]
        ladder, first = sizes[:1], 1
        search = trial_seconds(0, sizes[0])
        k, epochs = 1, epochs_that_fit(costs, available - search)
        final = costs.final(k, epochs)
    return _Split(ladder, first, search, k, epochs, final, notes)


def _notes(split: _Split, *, rungs: tuple[Rung, ...], train_images: int) -> tuple[str, ...]:
    if rungs[-1].train_images < train_images and not (split.top_k and _thin(rungs)):
        return (
            *split.notes,
            f"the ladder stops at {rungs[-1].train_images:,} images: another rung would not "
            "get one configuration",
        )
    return tuple(split.notes)


def _thin(rungs: tuple[Rung, ...]) -> bool:
    return bool(rungs) and rungs[0].configs < THIN_LADDER_CONFIGS


def _no_room(*, needed: float, probe_seconds: float, budget_seconds: float) -> FmsearchError:
    return FmsearchError(
        f"--budget-hours must leave room for one trial: expected at least "
        f"{needed / 3600:.4f} h ({needed:.0f} s, {probe_seconds:.0f} s of them already spent "
        f"on set-up and measurement) on this host, got {budget_seconds / 3600:.4f} h "
        f"({budget_seconds:.0f} s)"
    )


def _fit_ladder(sizes: list[int], search: float, *, trial_seconds, eta: int):
    """The tallest ladder whose top rung still gets a configuration in ``search`` seconds:
    its rung sizes, the seconds per first-rung configuration, first-rung configurations."""
    for n_rungs in range(len(sizes), 0, -1):
        ladder = sizes[:n_rungs]
        per_config = sum(trial_seconds(r, n) / eta**r for r, n in enumerate(ladder))
        first = int(search // per_config) if search > 0 else 0
        if first // eta ** (n_rungs - 1) >= 1:
            break
    return ladder, per_config, first
