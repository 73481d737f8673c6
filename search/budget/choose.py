"""Which architecture a planned search over several (``--arch auto``) spends its budget on.

Each family's published configuration is measured on this host, each gets the plan it would
get alone (:func:`search.budget.plan.make_plan`), and the family whose plan is expected to end
most accurate is searched, alone, under exactly that plan. The expectation is the family's
recipe trained to the end (``RECIPE_ACCURACY``), less its ``HALVING_COSTS`` for every halving of
the recipe's epochs its final training cannot afford here: on a slow host or a short budget a
wide network that gets a few epochs loses to a small one trained long, and wins once the time
carries it. Free of TensorFlow, like the plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runners.errors import FmsearchError
from search.budget.plan import Plan

# Each family's recipe on all 50,000 training images, judged on the test set: (accuracy,
# epochs); what fmsearch obtained where it trained the recipe to the end, the source's
# figure where it did not (resnet, vggbn) (benchmarks/results/recipes.md).
RECIPE_ACCURACY: dict[str, tuple[float, int]] = {
    "mlp": (0.8889, 20),
    "dnn": (0.8846, 20),
    "rnn": (0.8901, 20),
    "cnn": (0.9249, 20),
    "resnet": (0.9159, 20),
    "minicnn": (0.9236, 20),
    "tinyvgg": (0.9040, 25),
    "vggbn": (0.9487, 50),
}
# Accuracy lost per halving of a recipe's epochs: the float32 host's VGG-BN finals lost 2.3-4.2
# points a halving at 14-28 of its 50 epochs, below the CNN recipe (docs/budgets.md;
# benchmarks/results/champion_run.md); assumed of every family not measured.
HALVING_COST = 0.03
# The CNN loses far less: a 15-minute final of 9 of its recipe's 20 epochs ended 0.3 points
# under it (benchmarks/results/versus_plain.md).
HALVING_COSTS: dict[str, float] = {"cnn": 0.003}


def expected_accuracy(family: str, *, epochs: int) -> float | None:
    """What ``family``'s final is expected to reach trained for ``epochs`` epochs (None: no
    recipe on record to expect anything from)."""
    if family not in RECIPE_ACCURACY:
        return None
    accuracy, recipe_epochs = RECIPE_ACCURACY[family]
    if epochs < 1:
        return 0.0
    cost = HALVING_COSTS.get(family, HALVING_COST)
    return accuracy - cost * max(0.0, math.log2(recipe_epochs / epochs))


@dataclass(frozen=True)
class Choice:
    """The family a search over several spends its budget on, and why.

    Attributes:
        family: The one architecture searched.
        expected: Each family's expected test accuracy under its own plan (None: its plan
            does not fit the budget).
        epochs: Each family's final epochs under its own plan (0: does not fit).
        images_per_s: Each family's measured training rate.
        measured: The chosen family's measurement, which its plan reuses.
    """

    family: str
    expected: dict[str, float | None]
    epochs: dict[str, int]
    images_per_s: dict[str, float]
    measured: Any = None

    def describe(self, *, requested: str) -> str:
        """The choice as the CLI prints it, before the plan."""
        ranked = sorted(self.expected, key=lambda f: -(self.expected[f] or -1.0))
        return f"--arch {requested}: {self.family}, alone; each family's plan here, expected:\n" + (
            "\n".join(
                f"  {f:<8} {self.images_per_s[f]:>7,.0f} images/s, "
                + (
                    "no plan fits the budget, or no recipe to expect from"
                    if self.expected[f] is None
                    else "no final training fits the budget"
                    if not self.epochs[f]
                    else f"final {self.epochs[f]} epochs, expected {self.expected[f]:.2%}"
                )
                + ("  <- chosen" if f == self.family else "")
                for f in ranked
            )
        )


def choose(plans: Mapping[str, Plan | None], *, images_per_s: Mapping[str, float]) -> Choice:
    """The family whose plan is expected to end most accurate; the cheaper of equals.

    Args:
        plans: Each family's plan alone (None: none fits the budget).
        images_per_s: Each family's measured training rate.

    Raises:
        FmsearchError: No family's plan fits the budget.
    """
    epochs = {f: (p.final_epochs if p is not None and p.top_k else 0) for f, p in plans.items()}
    expected = {
        f: expected_accuracy(f, epochs=epochs[f]) if plans[f] is not None else None for f in plans
    }
    fitting = [f for f in plans if expected[f] is not None]
    if not fitting:
        raise FmsearchError(
            f"expected a budget that holds one trial of {', '.join(plans)} (of those with a "
            "recipe on record), got none that does"
        )
    family = max(fitting, key=lambda f: (expected[f], images_per_s[f]))
    return Choice(family=family, expected=expected, epochs=epochs, images_per_s=dict(images_per_s))
