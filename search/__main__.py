"""``python -m search``: the ``fmsearch`` command, for environments without its script."""

from search.cli import main

main()
