"""``python -m executor`` is the ``pilot`` command."""

from executor.cli import main

main()
