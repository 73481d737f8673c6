"""``fmsearch recipes`` and ``reproduce``: the source projects' configurations."""

from __future__ import annotations

import click

from runners.precision import PRECISIONS
from search.cli.options import (
    Finite,
    data_dir_option,
    quiet_option,
    setup_logging,
    storage_option,
    study_name_option,
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
    for name, r in RECIPES.items():
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
@click.option(
    "--subset", type=click.IntRange(min=1), metavar="N",
    help="Train on N training images (stratified) instead of all 50,000.",
)  # fmt: skip
@val_size_option(help="Validation images, split off the 60k training images.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), metavar="N")
@study_name_option(
    help="Study (and MLflow experiment) name.  [default: reproduce-RECIPE-<date>-<time>]",
    required=False,
)
@storage_option
@tracking_option
@data_dir_option
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
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
    from search.reproduce import reproduce as run_recipe

    reproduction = run_recipe(
        recipe, epochs=epochs, time_box_hours=time_box_hours, subset=subset,
        val_size=val_size, seed=seed, study_name=study_name, storage=storage,
        tracking_uri=tracking_uri, data_dir=data_dir, precision=precision, threads=threads,
        quiet=quiet,
    )  # fmt: skip
    click.echo(reproduction.describe())


COMMANDS = (recipes, reproduce)
