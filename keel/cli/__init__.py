"""The ``keel`` command (``app``) and what it shows a person (``console``, ``summary``,
``overview``, the ``--json`` schemas in ``schemas/``). The only part of keel that imports
flows/ and tasks/."""

from keel.cli.app import app, main

__all__ = ["app", "main"]
