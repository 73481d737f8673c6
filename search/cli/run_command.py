"""``fmsearch run``: its options (``api.SearchOptions``' fields by the same names) and what
it prints."""

from __future__ import annotations

from pathlib import Path

import click

from search.budget.plan import DISTILL_TOLERANCE
from search.cli.options import (
    ArchType,
    budget_option,
    data_dir_option,
    echo_promotion,
    heartbeat_option,
    max_latency_option,
    max_params_option,
    precision_option,
    quiet_option,
    register_as_option,
    seed_option,
    setup_logging,
    storage_option,
    study_name_option,
    subset_option,
    threads_option,
    timeout_option,
    tracking_option,
    val_size_option,
    verbose_option,
    workers_option,
)
from search.engines import ENGINES
from search.trials.choices import OBJECTIVES, PRUNERS, SAMPLERS, TUNERS
from spaces.families import AUTO

# What --enqueue without a recipe's name stands for: the architecture's DEFAULTS.
PUBLISHED = "published"


@click.command()
@click.option(
    "--arch",
    type=ArchType(),
    required=True,
    help="Architecture to search; 'auto' or several Keras ones comma-separated "
    f"(resnet,vggbn,cnn) search the families in one study. 'auto': {','.join(AUTO)}.",
)
@click.option(
    "--trials",
    "n_trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Trials to add to the study.",
)
@study_name_option(
    required=False, help="Study (and MLflow experiment) name.  [default: the --arch]"
)
@storage_option
@tracking_option
@click.option("--sampler", type=click.Choice(tuple(SAMPLERS)), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(tuple(PRUNERS)), default="hyperband", show_default=True)
@seed_option
@click.option(
    "--deterministic", is_flag=True,
    help="With --seed: TensorFlow's op determinism, so that each trial repeats exactly on "
    "this machine (slower: random augmentation runs serially).",
)  # fmt: skip
@timeout_option
@budget_option
@click.option(
    "--max-epochs",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Epochs a trial trains at most (the pruner's full budget).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="End a trial after this many epochs without a better validation accuracy (0: never).",
)
@subset_option
@val_size_option(help="Validation images, split off the 60k training images.")
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="accuracy",
    show_default=True,
    help="What to optimise on the validation images: accuracy, macro F1, the worst class's "
    "F1 (Shirt, in every source), or accuracy against the parameter count or the latency per "
    "image (multi-objective: a Pareto front, no pruning).",
)
@click.option(
    "--fix",
    "fixes",
    multiple=True,
    metavar="NAME=VALUE",
    help="Pin a hyperparameter (repeatable), e.g. --fix optimizer=adam --fix mix=none.",
)
@click.option(
    "--space-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file narrowing ranges or choices, e.g. 'learning_rate: {low: 0.001, high: 0.005}'.",
)
@precision_option
@click.option(
    "--enqueue",
    is_flag=False,
    flag_value=PUBLISHED,
    default=None,
    metavar="[RECIPE]",
    help="Start with the architecture's published configuration (once per study; a Keras "
    "search of under 10 epochs also with it retuned for few epochs), or with the named "
    "source recipe exactly (`fmsearch recipes` lists them).  [default: on, unless "
    "--space-file narrows the space or --engine keras-tuner]",
)
@click.option("--no-enqueue", is_flag=True, help="Start from no configuration.")
@click.option(
    "--refit-epochs",
    type=click.IntRange(min=1),
    metavar="N",
    help="After the search, train its best configuration again on all training images (not "
    "only --subset) for up to N epochs, unpruned: a trial of the study, tracked and "
    "promoted like the others (once per best trial).",
)
@click.option(
    "--final-on-all-data",
    is_flag=True,
    help="A planned search (--budget-hours) trains the model it chose on validation again "
    "with the validation images among its training images, for its best epoch count, and "
    "promotes that one (the plan keeps the time for it).",
)
@click.option(
    "--distill/--no-distill",
    default=True,
    show_default=True,
    help="A planned search (--budget-hours) whose finals' ensemble wins on validation trains "
    f"one model on the ensemble's soft labels and serves it instead when it is within "
    f"{100 * DISTILL_TOLERANCE:.1f} points (the plan keeps the time for it; not with "
    "--final-on-all-data).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    metavar="K",
    help="A planned search (--budget-hours) trains at most K of its best configurations on "
    "all images; the time fewer models leave goes to the search.  [default: 3]",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Pretrained backbone weights for a transfer architecture (resnet50v2): a Keras "
    "weights file.  [default: ImageNet's from the Keras cache where present, else none]",
)
@click.option(
    "--engine",
    type=click.Choice(tuple(ENGINES)),
    default="optuna",
    show_default=True,
    help="Who picks the trials: Optuna (--sampler, --pruner, --workers), or Keras Tuner "
    "(--tuner) over the same space, trained and tracked the same way.",
)
@click.option(
    "--tuner",
    type=click.Choice(TUNERS),
    default="hyperband",
    show_default=True,
    help="Keras Tuner's algorithm with --engine keras-tuner.",
)
@workers_option
@threads_option
@heartbeat_option
@data_dir_option
@register_as_option
@max_params_option
@max_latency_option
@click.option(
    "--promote/--no-promote",
    default=True,
    show_default=True,
    help="Judge the best trial on the test set and register it when the study ends.",
)
@quiet_option
@verbose_option
def run(*, n_trials, enqueue, no_enqueue, verbose, **options) -> None:
    """Search ARCH: add --trials trials to a study, then promote the best model.

    Re-running the same command resumes the study and adds trials.

    \b
    Examples:
      fmsearch run --arch resnet --trials 100
      fmsearch run --arch cnn --trials 10 --subset 10000 --max-epochs 5
      fmsearch run --arch resnet --trials 100 --subset 5000 --refit-epochs 20
      fmsearch run --arch mlp --storage postgresql://user@db/optuna --study-name mlp-big
      fmsearch run --arch vggbn --enqueue --fix optimizer=adamw --space-file narrow.yaml
      fmsearch run --arch vggbn --enqueue vggbn-bn94 --trials 30
      fmsearch run --arch cnn --objective accuracy,latency --max-latency-ms 0.05
      fmsearch run --arch resnet --trials 100 --workers 2
      fmsearch run --arch cnn --trials 30 --engine keras-tuner --tuner bayesian
    """

    setup_logging(quiet=options["quiet"], verbose=verbose)
    from search import api

    source = click.get_current_context().get_parameter_source("n_trials")
    given = source not in (click.core.ParameterSource.DEFAULT, None)
    if enqueue is not None and no_enqueue:
        raise click.UsageError("expected --enqueue or --no-enqueue, got both")
    enqueue = False if no_enqueue else True if enqueue == PUBLISHED else enqueue
    # The other options are api.SearchOptions' fields by the same names.
    result = api.search(trials=n_trials if given else None, enqueue=enqueue, **options)
    # A plan's finals and ensemble are part of its search: its best trial is the one promoted.
    click.echo((result.outcome if result.plan is not None else result.searched).describe())
    if result.refit is not None:
        _echo_refit(result.refit, study=result.study)
    if result.promotion is not None:
        echo_promotion(result.promotion)


def _echo_refit(refit, *, study) -> None:
    from optuna.trial import TrialState

    done = refit.trial
    if done is None:
        click.echo("refit: not run")
    elif done.state == TrialState.COMPLETE:
        best = study.trials[refit.of]
        click.echo(
            f"refit trial {done.number}: val_accuracy {done.value:.4f} "
            f"(trial {refit.of}: {best.value:.4f})"
        )
    else:
        click.echo(f"refit trial {done.number}: {done.state.name.lower()}")


COMMANDS = (run,)
