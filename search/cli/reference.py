"""docs/cli.md, the CLI reference, written from the click commands themselves:
``python -m search.cli.reference > docs/cli.md`` (``make docs``); ``tests/test_docs.py`` checks
that the page is fresh."""

from __future__ import annotations

import click

# Wide enough for the option tables, fixed so that the page does not depend on a terminal.
WIDTH = 100


def _help(command: click.Command, name: str, parent: click.Context | None) -> str:
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH,
                        max_content_width=WIDTH)  # fmt: skip
    return command.get_help(ctx)


def reference() -> str:
    """The reference page: ``fmsearch --help``, then each command's ``--help``, by name."""
    from search.cli import main

    top = click.Context(main, info_name="fmsearch", terminal_width=WIDTH, max_content_width=WIDTH,
                        **main.context_settings)  # fmt: skip
    parts = [
        "# CLI reference",
        "",
        "Generated from the commands by `make docs` (`python -m search.cli.reference`); "
        "`tests/test_docs.py` fails when it is stale.",
        "",
        "```",
        main.get_help(top),
        "```",
    ]
    for name in sorted(main.commands):
        parts += [
            "",
            f"## fmsearch {name}",
            "",
            "```",
            _help(main.commands[name], name, top),
            "```",
        ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
