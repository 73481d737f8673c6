"""A budgeted search's plan: this host measured, the budget planned, and for a search over
several architectures (``--arch auto``) the one the budget is spent on, chosen first."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import optuna

from runners.data import Split
from runners.errors import FmsearchError
from search.budget.choose import Choice, choose
from search.budget.plan import TOP_K, Plan
from search.budget.plan import make_plan as plan_budget
from search.names import ARCH_ATTR
from search.promotion.promote import model_name_for
from search.run.config import SearchConfig
from spaces import ARCHITECTURES
from spaces.families import Families, own_params

if TYPE_CHECKING:
    from runners.throughput import Throughput

logger = logging.getLogger(__name__)


def plan_for(c: SearchConfig, rate: Throughput, *, split: Split, started_at: float) -> Plan:
    """The plan of ``c``'s budget at ``rate``, from where the command is now."""
    return plan_budget(
        budget_seconds=c.budget.seconds,
        train_images_per_s=rate.train_images_per_s,
        eval_images_per_s=rate.eval_images_per_s,
        train_images=len(split.x_train),
        val_images=len(split.x_val),
        started_at=started_at,
        probe_seconds=time.time() - started_at,
        max_rung_epochs=c.training.max_epochs,
        retrain_on_all=c.budget.final_on_all_data,
        distill=c.budget.distill,
        top_k=TOP_K if c.budget.top_k is None else c.budget.top_k,
    )


def make_plan(s) -> tuple[Plan, Any]:
    """Measure this host, plan the budget, print and record the plan; the plan and ladder
    (``s``: the search, as :func:`search.run.pipeline.open_search` opened it)."""
    from runners.precision import resolve_policy
    from search.budget.costs import measure_host
    from search.budget.finals import make_ladder, record_plan

    c = s.config
    # The architecture chosen among several was measured a moment ago.
    throughput = c.choice.measured if c.choice is not None else measure_host(
        arch=c.arch, split=s.split, fixed=s.settings.fixed,
        policy=resolve_policy(s.settings.precision),
    )  # fmt: skip
    plan = plan_for(c, throughput, split=s.split, started_at=s.started_at)
    logger.info("%s", plan.describe(arch=c.arch))
    record_plan(s.study, tracker=s.tracker, parent_run_id=s.parent_run_id, plan=plan, arch=c.arch)
    ladder = make_ladder(plan, data=s.data, full=s.split, val_size=s.settings.val_size)
    return plan, ladder


def choose_family(
    c: SearchConfig, *, split: Split, optuna_storage, started_at: float
) -> SearchConfig:
    """``c`` for the one architecture a planned search over several spends its budget on:
    the one a resumed study chose before, else the one whose plan here is expected to end
    most accurate (:func:`search.budget.choose.choose`). What it prints is what then runs:
    that architecture's own plan, its published configuration first."""
    from runners.precision import resolve_policy
    from search.budget.costs import measure_host

    found, chosen = _chosen_before(optuna_storage, study_name=c.study_name)
    if found and chosen is None:
        return c  # a study that searches several together goes on doing so
    if chosen is None:
        policy = resolve_policy(c.training.precision)
        rates = {
            family: measure_host(
                arch=family, split=split, policy=policy, fixed=own_params(c.training.fixed, family)
            )
            for family in c.space.names
        }
        # Planned once all are measured: each family's plan starts from the same moment.
        plans = {}
        for family, rate in rates.items():
            try:
                plans[family] = plan_for(c, rate, split=split, started_at=started_at)
            except FmsearchError:
                plans[family] = None
        choice = choose(plans, images_per_s={f: r.train_images_per_s for f, r in rates.items()})
        choice = dataclasses.replace(choice, measured=rates[choice.family])
        logger.info("%s", choice.describe(requested=c.arch))
        chosen = choice.family
    else:
        choice = None
        logger.info("--arch %s: %s, as study %s chose before", c.arch, chosen, c.study_name)
    return for_family(c, chosen, choice=choice)


def for_family(c: SearchConfig, family: str, *, choice: Choice | None) -> SearchConfig:
    """``c`` searching ``family`` alone, registered under the name the search asked for."""
    training = dataclasses.replace(
        c.training,
        fixed=own_params(c.training.fixed, family),
        narrowed=own_params(c.training.narrowed, family),
    )
    promotion = dataclasses.replace(
        c.promotion, register_as=c.promotion.register_as or model_name_for(c.arch)
    )
    return dataclasses.replace(c, arch=family, space=ARCHITECTURES[family], training=training,
                               promotion=promotion, requested=c.arch, choice=choice)  # fmt: skip


def _chosen_before(storage, *, study_name: str) -> tuple[bool, str | None]:
    """Whether a study of that name exists, and the one architecture it searches (None:
    several)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return False, None
    arch = study.user_attrs.get(ARCH_ATTR)
    return True, arch if arch in ARCHITECTURES else None


def searches_several(c: SearchConfig) -> bool:
    """Whether ``c`` is a planned search over several architectures, to choose one of."""
    return c.planned and isinstance(c.space, Families)
