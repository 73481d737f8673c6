"""After a planned search's final training: keep an ensemble or TTA only when it wins.

The final models predict the validation images, plain and mirrored; the average of the top
models' probabilities and flip test-time augmentation are each kept only when they beat the
best single model there (:func:`runners.ensemble.choose_combination`). What is kept becomes a
trial of the study of its own (``ensemble_of`` its members), with an MLflow run holding its
members, its validation result, latency and the decision, so promotion treats it like any
trial: judged on the test set only if it is the most accurate on validation, registered as
one pyfunc model with the same input and output.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.data import CLASS_NAMES, Split
from runners.ensemble import (
    Combination,
    EnsembleChoice,
    average,
    choose_combination,
    view_probabilities,
)
from runners.metrics import evaluate_predictions, measure_latency
from search.names import (
    DECISION_TAG,
    ENSEMBLE_ATTR,
    ENSEMBLE_TAG,
    FINAL_ATTR,
    LATENCY_ATTR,
    MODEL_URI_TAG,
    RUN_ID_ATTR,
    STANDS_IN_ATTR,
    TRAIN_IMAGES_ATTR,
    TTA_ATTR,
)
from search.tracking import Tracker

logger = logging.getLogger(__name__)

DECISION_FILE = "ensemble.json"


def final_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's completed final trainings, most accurate first."""
    finals = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(FINAL_ATTR) and RUN_ID_ATTR in t.user_attrs
    ]
    return sorted(finals, key=lambda t: (-t.value, t.number))


def combine_finals(
    *,
    study: optuna.Study,
    tracker: Tracker,
    split: Split,
    parent_run_id: str,
    arch: str,
) -> EnsembleChoice | None:
    """Try the final models' ensembles and flip TTA on validation; record the decision on
    the parent run, and add the winner as a trial when it beats the best single model.

    Returns:
        The choice, or None when no final model was trained.
    """
    from runners.training import free_memory

    finals = final_trials(study)
    if not finals:
        return None
    models: dict[int, Any] = {}
    uris: dict[int, str] = {}
    probabilities = {}
    try:
        for trial in finals:
            uri = tracker.run_tags(trial.user_attrs[RUN_ID_ATTR]).get(MODEL_URI_TAG)
            if uri is None:
                continue
            model = tracker.load_keras_model(uri)
            models[trial.number], uris[trial.number] = model, uri
            probabilities[trial.number] = view_probabilities(
                predictor([model], tta=False), split.x_val
            )
        if not probabilities:
            return None
        choice = choose_combination(probabilities, split.y_val)
        logger.info(
            "on validation: %s",
            "; ".join(f"{o.describe()} {o.val_accuracy:.4f}" for o in choice.options),
        )
        tracker.log_json(parent_run_id, choice.to_dict(), DECISION_FILE)
        tracker.set_tags(parent_run_id, {ENSEMBLE_TAG: _decision(choice)})
        if choice.combined:
            chosen = choice.chosen
            members = [models[m] for m in chosen.members]
            predict = predictor(members, tta=chosen.tta)
            latency = measure_latency(predict, split.x_val)
            _add_trial(
                study=study,
                tracker=tracker,
                choice=choice,
                split=split,
                probabilities=[
                    probabilities[m][v]
                    for m in chosen.members
                    for v in ((0, 1) if chosen.tta else (0,))
                ],
                uris=[uris[m] for m in chosen.members],
                trials={t.number: t for t in finals},
                latency=latency,
                n_params=sum(m.count_params() for m in members),
                parent_run_id=parent_run_id,
                arch=arch,
            )
        return choice
    finally:
        models.clear()
        free_memory()


def _decision(choice: EnsembleChoice) -> str:
    best = choice.best_single
    if not choice.combined:
        return (
            f"kept {best.describe()} alone ({best.val_accuracy:.4f} on validation): no "
            "ensemble or flip TTA beat it"
        )
    return (
        f"kept {choice.chosen.describe()} ({choice.chosen.val_accuracy:.4f} on validation): "
        f"it beats {best.describe()} ({best.val_accuracy:.4f})"
    )


def predictor(models: Sequence[Any], *, tta: bool):
    """``predict(images)``: the Keras ``models``' averaged class probabilities (with each
    one's on the mirrored images too, with ``tta``)."""
    from runners.ensemble import flip_horizontal

    def predict(images: np.ndarray) -> np.ndarray:
        views = [images, flip_horizontal(images)] if tta else [images]
        return average([m.predict(v, batch_size=512, verbose=0) for m in models for v in views])

    return predict


def _add_trial(
    *,
    study: optuna.Study,
    tracker: Tracker,
    choice: EnsembleChoice,
    split: Split,
    probabilities: list[np.ndarray],
    uris: list[str],
    trials: dict[int, FrozenTrial],
    latency: float,
    n_params: int,
    parent_run_id: str,
    arch: str,
) -> FrozenTrial:
    """The chosen combination as a completed trial of the study, with its MLflow run."""
    chosen: Combination = choice.chosen
    best = trials[chosen.members[0]]
    run_id = tracker.start_ensemble_run(
        study_name=study.study_name,
        parent_run_id=parent_run_id,
        arch=arch,
        name="ensemble-" + "-".join(map(str, chosen.members)) + ("-tta" if chosen.tta else ""),
        model_uris=tuple(uris),
        tta=chosen.tta,
        params={**best.params, "members": ",".join(map(str, chosen.members))},
    )
    try:
        predicted = average(probabilities).argmax(axis=1)
        evaluation = evaluate_predictions(split.y_val, predicted, class_names=CLASS_NAMES)
        tracker.log_metrics(
            run_id,
            {"best_val_accuracy": evaluation.accuracy, LATENCY_ATTR: latency,
             "n_params": n_params, "members": len(chosen.members)},
        )  # fmt: skip
        tracker.log_evaluation(run_id, evaluation, class_names=CLASS_NAMES, split="val")
        tracker.log_json(run_id, choice.to_dict(), DECISION_FILE)
        tracker.set_tags(run_id, {DECISION_TAG: _decision(choice)})
    except BaseException as exc:
        tracker.end_run(run_id, status="FAILED", reason=f"{type(exc).__name__}: {exc}")
        raise
    tracker.end_run(run_id, status="FINISHED")
    # The best member's params stand in for the ensemble's: Optuna's importances and
    # plots need every completed trial to carry the search space's params.
    trial = optuna.trial.create_trial(
        value=evaluation.accuracy,
        params=best.params,
        distributions=best.distributions,
        user_attrs={
            ENSEMBLE_ATTR: list(chosen.members),
            TTA_ATTR: chosen.tta,
            RUN_ID_ATTR: run_id,
            LATENCY_ATTR: latency,
            "n_params": n_params,
            TRAIN_IMAGES_ATTR: best.user_attrs.get(TRAIN_IMAGES_ATTR),
        },
    )
    stored = _store(study, trial, run_id=run_id)
    logger.info("%s added to the study", chosen.describe())
    return stored


def _store(study: optuna.Study, trial: FrozenTrial, *, run_id: str) -> FrozenTrial:
    """Add ``trial`` to ``study``; the stored trial (the study numbers it as it stores it:
    the stored one is the one holding ``run_id``)."""
    study.add_trial(trial)
    return next(
        t for t in reversed(study.get_trials(deepcopy=False))
        if t.user_attrs.get(RUN_ID_ATTR) == run_id
    )  # fmt: skip


def add_stand_in(
    *,
    study: optuna.Study,
    tracker: Tracker,
    chosen: FrozenTrial,
    retrained: Mapping[int, int],
    parent_run_id: str,
    arch: str,
) -> FrozenTrial | None:
    """An ensemble trial (``chosen``) again, its members retrained on all images where they
    were (``retrained``: member -> its stand-in): a trial that stands in for ``chosen``.

    Its members saw the validation images in training, so it is not validated again: its
    value is ``chosen``'s, and its run says so. None when ``chosen`` is a single model (its
    retraining stands in by itself) or no member was retrained.
    """
    members = chosen.user_attrs.get(ENSEMBLE_ATTR)
    if not members or not retrained:
        return None
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    numbers = [retrained.get(m, m) for m in members]
    uris = [tracker.run_tags(by_number[n].user_attrs[RUN_ID_ATTR])[MODEL_URI_TAG] for n in numbers]
    tta = bool(chosen.user_attrs.get(TTA_ATTR))
    run_id = tracker.start_ensemble_run(
        study_name=study.study_name,
        parent_run_id=parent_run_id,
        arch=arch,
        name="ensemble-" + "-".join(map(str, numbers)) + ("-tta" if tta else "") + "-all-data",
        model_uris=tuple(uris),
        tta=tta,
        params={**chosen.params, "members": ",".join(map(str, numbers))},
        stands_in_for=chosen.number,
    )
    tracker.set_tags(
        run_id,
        {DECISION_TAG: f"trial {chosen.number}'s combination, its members "
         f"{', '.join(map(str, retrained))} retrained with the validation images"},
    )  # fmt: skip
    tracker.end_run(run_id, status="FINISHED")
    trial = optuna.trial.create_trial(
        value=chosen.value,
        params=chosen.params,
        distributions=chosen.distributions,
        user_attrs={
            **{k: v for k, v in chosen.user_attrs.items() if k != RUN_ID_ATTR},
            ENSEMBLE_ATTR: numbers,
            STANDS_IN_ATTR: chosen.number,
            RUN_ID_ATTR: run_id,
        },
    )
    return _store(study, trial, run_id=run_id)
