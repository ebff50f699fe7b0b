"""``python -m nfbench.cli``: the ``nfbench`` command."""

from nfbench.cli.console import main

main()
