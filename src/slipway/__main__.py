"""``python -m slipway``: the ``slipway`` command, for environments without the console script."""

from slipway.cli import main

main()
