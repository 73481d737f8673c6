"""The ``fmsearch`` command line: thin click commands over :mod:`search.api`.

Environment variables are read here only (click's ``envvar=``; the flag wins). Heavy imports
(TensorFlow, MLflow, Optuna) happen inside the commands, so ``fmsearch --help`` is instant.
Commands: ``run_command`` (``fmsearch run``), ``search_commands`` (what follows a search),
``serve_commands`` (servers and predictions), ``insight_commands`` (the data, spaces and models
looked into), ``recipe_commands`` (the source projects' configurations).
"""

from __future__ import annotations

import os

import click

from runners.errors import FmsearchError
from search.cli import (
    insight_commands,
    recipe_commands,
    run_command,
    search_commands,
    serve_commands,
)
from search.cli.options import ENVIRONMENT
from search.storage.urls import redact


class _Group(click.Group):
    """Turns fmsearch's fatal errors into one-line messages with a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FmsearchError as exc:
            # Its text may quote a library's error, which quotes URLs whole.
            raise click.ClickException(redact(str(exc))) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fmsearch")
def main() -> None:
    """fmsearch: find the best Fashion-MNIST classifier by search, with every step on record.

    Studies run on Optuna, every trial is tracked in MLflow, and the winner is registered as
    an MLflow model. Local state lives under ./mlruns unless --storage / --tracking-uri say
    otherwise.
    """
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)


for _module in (run_command, search_commands, recipe_commands, serve_commands, insight_commands):
    for _command in _module.COMMANDS:
        main.add_command(_command)
