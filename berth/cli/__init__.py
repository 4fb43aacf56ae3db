"""The ``berth`` command line: containerd's ``ctr``, built on the berth client library.

Each command group is a module of its own (``images``, ``containers``, ``tasks``,
``snapshots``, ``content``, ``namespaces``, ``leases``, ``events``, ``system``; ``run``
and what it shares with ``containers create`` in ``specs``); ``core`` holds the global
options and error handling, ``output`` the tables and JSON, ``progress`` the live
transfer view, ``session`` the foreground process. See docs/cli.md.
"""

from berth.cli.app import cli, main

__all__ = ["cli", "main"]
