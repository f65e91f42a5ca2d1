"""Sub-commands of ``slipway``, one module per area (``rollout``, ``governance`` …).

Each module defines a ``typer.Typer()`` named ``app`` and ``slipway.cli`` mounts it with one
``add_typer`` line. Shared terminal helpers live in :mod:`slipway.commands.common`; errors are
raised, never turned into exit codes here (``slipway.cli.EXIT_CODES`` does that, in one place).
"""
