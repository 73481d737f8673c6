"""``fmsearch spaces``, ``data``, ``leaderboard``, ``eda``, ``explain`` and ``lr-find``."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli.options import (
    Finite,
    data_dir_option,
    quiet_option,
    setup_logging,
    threads_option,
    tracking_option,
    val_size_option,
    verbose_option,
)
from spaces import ARCHITECTURES


@click.command()
@click.argument("arch", required=False, type=click.Choice(sorted(ARCHITECTURES)))
def spaces(arch) -> None:
    """List the architectures, or one architecture's hyperparameters and ranges."""
    from search import api

    if arch is None:
        for name, summary in api.spaces().items():
            click.echo(f"{name:8} {summary}")
        click.echo("\n`fmsearch spaces ARCH` lists an architecture's hyperparameters.")
        return
    click.echo(api.spaces()[arch])
    for name, dist in api.space(arch=arch).items():
        click.echo(f"  {name:16} {_describe_distribution(dist)}")


def _describe_distribution(dist) -> str:
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return "one of " + ", ".join(map(str, dist.choices))
    kind = "int" if isinstance(dist, d.IntDistribution) else "float"
    scale = ", log scale" if dist.log else ""
    return f"{kind} from {dist.low:g} to {dist.high:g}{scale}"


@click.command()
@data_dir_option
def data(data_dir) -> None:
    """Find and verify Fashion-MNIST (shapes, labels, checksums); download it if needed."""
    setup_logging(quiet=True)
    from search import api

    loaded = api.data(data_dir=data_dir)
    click.echo(
        f"Fashion-MNIST from {loaded.source}: {len(loaded.y_train)} training and "
        f"{len(loaded.y_test)} test images, checksums OK"
    )


@click.command()
@tracking_option
@data_dir_option
@click.option(
    "--model",
    "model_names",
    multiple=True,
    metavar="NAME",
    help="Registered model to rank (repeatable).  [default: every fmsearch-* model]",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("leaderboard.csv"),
    show_default=True,
    help="Where to write the table as CSV.",
)
@quiet_option
@verbose_option
def leaderboard(tracking_uri, data_dir, model_names, csv_path, quiet, verbose) -> None:
    """Rank the champion of every study's model on the held-out test set.

    Accuracy, macro precision, recall and F1 are recomputed from each registered model; also
    its parameters, the training time of its trial and its latency per image. Prints a table,
    writes a CSV, and logs both with a bar chart to the fmsearch-leaderboard experiment.
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api
    from search.insight.leaderboard import entry_row

    board = api.leaderboard(tracking_uri=tracking_uri, data_dir=data_dir,
                            model_names=model_names, csv_path=csv_path)  # fmt: skip
    rows = [entry_row(e) for e in board.entries]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    click.echo("  ".join(k.rjust(w) if k != "model" else k.ljust(w) for k, w in widths.items()))
    for row in rows:
        click.echo(
            "  ".join(
                row[k].rjust(w) if k != "model" else row[k].ljust(w) for k, w in widths.items()
            )
        )
    click.echo(f"leaderboard: {csv_path}, and a run in the fmsearch-leaderboard experiment")


@click.command()
@tracking_option
@data_dir_option
@val_size_option(
    help="Validation images, split off the 60k training images as `fmsearch run` does."
)
@quiet_option
@verbose_option
def eda(tracking_uri, data_dir, val_size, quiet, verbose) -> None:
    """Log the class distribution of train/validation/test and samples of each class."""
    setup_logging(quiet=quiet, verbose=verbose)
    from runners.data import CLASS_NAMES
    from search import api

    found = api.eda(tracking_uri=tracking_uri, data_dir=data_dir, val_size=val_size)
    run_id, counts = found.run_id, found.counts
    click.echo("class".ljust(12) + "".join(s.rjust(12) for s in counts))
    for name in CLASS_NAMES:
        click.echo(name.ljust(12) + "".join(str(c[name]).rjust(12) for c in counts.values()))
    click.echo(f"EDA run {run_id} in the fmsearch-eda experiment")


@click.command()
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="The model to explain, e.g. models:/fmsearch-cnn@champion.",
)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The test image to explain.",
)
@click.option(
    "--embedding",
    type=click.Choice(["pca", "tsne", "umap"]),
    help="Also map the model's penultimate features of the test set in 2-d (umap: pip "
    "install 'fmsearch[umap]').",
)
@click.option(
    "--embedding-images",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Test images in the embedding map.",
)
@click.option(
    "--lime-samples",
    type=click.IntRange(min=50),
    default=500,
    show_default=True,
    help="Perturbed images LIME fits its local model on.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("explanations"),
    show_default=True,
)
@tracking_option
@data_dir_option
@quiet_option
@verbose_option
def explain(
    model_uri,
    index,
    embedding,
    embedding_images,
    lime_samples,
    output_dir,
    tracking_uri,
    data_dir,
    quiet,
    verbose,
) -> None:
    """Explain a model's prediction for one test image: occlusion saliency and LIME.

    \b
    Examples:
      fmsearch explain --model models:/fmsearch-cnn@champion --index 42
      fmsearch explain --model models:/fmsearch-cnn@champion --embedding tsne
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api

    result = api.explain(model_uri=model_uri, index=index, embedding=embedding,
                         embedding_images=embedding_images, lime_samples=lime_samples,
                         output_dir=output_dir, tracking_uri=tracking_uri,
                         data_dir=data_dir)  # fmt: skip
    click.echo(
        f"test image {index}: true {result.true_class}, predicted {result.predicted_class} "
        f"({result.confidence:.1%})"
    )
    for path in result.files:
        click.echo(f"wrote {path}")
    click.echo(f"logged to run {result.run_id} in the fmsearch-explain experiment")


@click.command("lr-find")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), required=True)
@click.option(
    "--steps",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Batches the learning rate rises over.",
)
@click.option("--min-lr", type=Finite(min=0, min_open=True), default=1e-6,
              show_default=True)  # fmt: skip
@click.option("--max-lr", type=Finite(min=0, min_open=True), default=1.0,
              show_default=True)  # fmt: skip
@click.option(
    "--subset",
    type=click.IntRange(min=100),
    default=20_000,
    show_default=True,
    metavar="N",
    help="Training images to draw the batches from.",
)
@click.option(
    "--write-space-file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the suggested range as a space file, for `fmsearch run --space-file`.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("explanations"),
    show_default=True,
)
@tracking_option
@data_dir_option
@threads_option
@quiet_option
@verbose_option
def lr_find(
    arch,
    steps,
    min_lr,
    max_lr,
    subset,
    write_space_file,
    output_dir,
    tracking_uri,
    data_dir,
    threads,
    quiet,
    verbose,
) -> None:
    """Find a learning-rate range for ARCH: train briefly while the rate rises exponentially.

    Plots loss against learning rate and suggests a range; --write-space-file narrows a
    study's learning_rate to it:

    \b
      fmsearch lr-find --arch cnn --write-space-file lr.yaml
      fmsearch run --arch cnn --space-file lr.yaml
    """
    setup_logging(quiet=quiet, verbose=verbose)
    from search import api

    if min_lr >= max_lr:
        raise click.BadParameter(f"expected --min-lr below --max-lr ({max_lr:g}), got {min_lr:g}")
    found = api.lr_find(arch=arch, steps=steps, min_lr=min_lr, max_lr=max_lr, subset=subset,
                        output_dir=output_dir, write_space_file=write_space_file,
                        tracking_uri=tracking_uri, data_dir=data_dir,
                        threads=threads)  # fmt: skip
    click.echo(
        f"{arch}: suggested learning rate {found.low:.3g} to {found.high:.3g} "
        f"(measured {found.measured_low:.3g} to {found.measured_high:.3g}); plot {found.plot}"
    )
    if write_space_file is not None:
        click.echo(f"wrote {write_space_file}: use it with --space-file")


COMMANDS = (spaces, data, leaderboard, eda, explain, lr_find)
