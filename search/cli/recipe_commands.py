"""``fmsearch recipes`` and ``reproduce`` (the source projects' configurations), and
``finetune`` (a registered model trained further, as one source did)."""

from __future__ import annotations

import click

from search.cli.options import (
    Finite,
    data_dir_option,
    echo_promotion,
    precision_option,
    quiet_option,
    register_as_option,
    seed_option,
    setup_logging,
    storage_option,
    study_name_option,
    subset_option,
    threads_option,
    tracking_option,
    val_size_option,
    verbose_option,
)
from spaces.recipes import RECIPES


@click.command()
def recipes() -> None:
    """List the source recipes: the published configurations `--enqueue RECIPE` starts from
    and `fmsearch reproduce RECIPE` trains."""
    from search import api

    for name, r in api.recipes().items():
        published = "-" if r.published_accuracy is None else f"{r.published_accuracy:.2%}"
        epochs = "" if r.epochs is None else f", {r.epochs} epochs"
        click.echo(f"{name:14} {r.arch:8} published {published:>7}  ({r.source}{epochs})")


@click.command()
@click.argument("recipe", type=click.Choice(list(RECIPES)), metavar="RECIPE")
@click.option(
    "--epochs", type=click.IntRange(min=1), metavar="N",
    help="Train N epochs instead of the recipe's.  [default: the recipe's]",
)  # fmt: skip
@click.option(
    "--time-box", "time_box_hours", type=Finite(min=0, min_open=True), metavar="HOURS",
    help="End the training after the epoch during which HOURS passed (recorded as "
    "time-boxed).",
)  # fmt: skip
@subset_option
@val_size_option(help="Validation images, split off the 60k training images.")
@seed_option
@study_name_option(
    help="Study (and MLflow experiment) name.  [default: reproduce-RECIPE-<date>-<time>]",
    required=False,
)
@storage_option
@tracking_option
@data_dir_option
@precision_option
@threads_option
@quiet_option
@verbose_option
def reproduce(recipe, epochs, time_box_hours, subset, val_size, seed, study_name, storage,
              tracking_uri, data_dir, precision, threads, quiet, verbose) -> None:  # fmt: skip
    """Train RECIPE at its published settings, then print its test accuracy and loss beside
    the published ones.

    The model is registered as fmsearch-RECIPE, never as an architecture's champion.

    \b
    Examples:
      fmsearch reproduce vggbn-bn94
      fmsearch reproduce tinyvgg-25ep --time-box 0.5
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api

    reproduction = api.reproduce(
        recipe, epochs=epochs, time_box_hours=time_box_hours, subset=subset,
        val_size=val_size, seed=seed, study_name=study_name, storage=storage,
        tracking_uri=tracking_uri, data_dir=data_dir, precision=precision, threads=threads,
        quiet=quiet,
    )  # fmt: skip
    click.echo(reproduction.describe())


@click.command()
@click.option(
    "--model", "model_uri", required=True, metavar="URI",
    help="The registered model: models:/NAME@ALIAS or models:/NAME/VERSION.",
)  # fmt: skip
@click.option(
    "--learning-rate", "learning_rates", type=Finite(min=0, min_open=True), multiple=True,
    help="A learning rate of the grid (repeatable).  [default: 1e-5 and 5e-6]",
)  # fmt: skip
@click.option(
    "--batch-size", "batch_sizes", type=click.IntRange(min=1), multiple=True,
    help="A batch size of the grid (repeatable).  [default: 32 and 64]",
)  # fmt: skip
@click.option(
    "--patience", "patiences", type=click.IntRange(min=1), multiple=True,
    help="An early-stopping patience of the grid, in epochs (repeatable).  [default: 2 and 3]",
)  # fmt: skip
@click.option(
    "--max-epochs", type=click.IntRange(min=1), default=10, show_default=True,
    help="Epochs a trial trains at most.",
)  # fmt: skip
@study_name_option(
    help="Study (and MLflow experiment) name.  [default: the model's study, then -finetune]",
    required=False,
)
@subset_option
@val_size_option(help="Validation images, split off the 60k training images (as the model's "
                 "study had them).")  # fmt: skip
@seed_option
@storage_option
@tracking_option
@data_dir_option
@precision_option
@threads_option
@register_as_option
@click.option("--promote/--no-promote", default=True, show_default=True)
@quiet_option
@verbose_option
def finetune(model_uri, learning_rates, batch_sizes, patiences, max_epochs, study_name, subset,
             val_size, seed, storage, tracking_uri, data_dir, precision, threads, register_as,
             promote, quiet, verbose) -> None:  # fmt: skip
    """Fine-tune a registered Keras model: a grid of learning rate x batch size x patience,
    every trial starting from the model's trained weights; promote the best.

    The fine-tuned model is registered under the source's name and becomes its champion only
    by beating it on the test set. The grid's rates may lie below the architecture's search
    range: they are the fine-tuning study's own.

    \b
    Examples:
      fmsearch finetune --model models:/fmsearch-resnet@champion
      fmsearch finetune --model models:/fmsearch-cnn/3 --learning-rate 1e-5 --batch-size 64
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api
    from search.trials.spaces import DEFAULT_GRID

    given = {"learning_rate": learning_rates, "batch_size": batch_sizes, "patience": patiences}
    grid = {name: values or DEFAULT_GRID[name] for name, values in given.items()}
    result = api.finetune(
        model_uri=model_uri, grid=grid, study_name=study_name, max_epochs=max_epochs,
        storage=storage, tracking_uri=tracking_uri, subset=subset, val_size=val_size,
        seed=seed, data_dir=data_dir, precision=precision, threads=threads,
        register_as=register_as, promote=promote, quiet=quiet,
    )  # fmt: skip
    click.echo(result.outcome.describe())
    if result.promotion is not None:
        echo_promotion(result.promotion)


COMMANDS = (recipes, reproduce, finetune)
