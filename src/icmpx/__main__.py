"""``python -m icmpx``: the same program as the ``icmpx`` command."""

from icmpx.cli import run

run()
