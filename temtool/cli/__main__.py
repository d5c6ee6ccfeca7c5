"""``python -m temtool.cli``: the console script."""

from temtool.cli import run

run()
