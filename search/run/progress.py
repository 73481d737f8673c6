"""Progress of a study: a bar on a terminal, one log line per trial everywhere."""

from __future__ import annotations

import logging
from typing import IO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from search.names import FAIL_REASON_ATTR
from search.outcome import most_accurate

logger = logging.getLogger(__name__)


class ProgressBar:
    """An Optuna callback: trials done, best value so far, pruned and failed counts.

    Args:
        total: Trials this run adds.
        disable: True hides the bar; None hides it when stderr is not a terminal, so logs of
            a non-interactive run stay clean.
        file: Where to draw the bar (default stderr).
    """

    def __init__(self, *, total: int, disable: bool | None = None, file: IO[str] | None = None):
        self._bar = tqdm(total=total, unit="trial", disable=disable, dynamic_ncols=True, file=file)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        pruned, failed = states.count(TrialState.PRUNED), states.count(TrialState.FAIL)
        best_trial = most_accurate(study)
        best = best_trial.values[0] if best_trial is not None else None
        postfix = {"best": f"{best:.4f}" if best is not None else "-"}
        postfix |= {"pruned": pruned, "failed": failed}
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)
        logger.info("trial %d %s%s", trial.number, _describe(trial), f" (best {postfix['best']})")

    def epoch(self, trial_number: int, epoch: int, metrics: dict[str, float]) -> None:
        """Show the running trial's latest epoch on the bar (not in logs: one line per trial)."""
        value = metrics.get("val_accuracy")
        shown = f" val {value:.4f}" if value is not None else ""
        self._bar.set_description(f"trial {trial_number} epoch {epoch + 1}{shown}", refresh=True)

    def close(self) -> None:
        self._bar.close()


def _describe(trial: FrozenTrial) -> str:
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if trial.state == TrialState.COMPLETE:
        return f"complete: val_accuracy {trial.values[0]:.4f} in {seconds:.1f} s"
    if trial.state == TrialState.PRUNED:
        step = trial.last_step
        return f"pruned after epoch {step + 1 if step is not None else 0} ({seconds:.1f} s)"
    if trial.state == TrialState.FAIL:
        return f"failed: {trial.user_attrs.get(FAIL_REASON_ATTR, 'see the log above')}"
    return trial.state.name.lower()
