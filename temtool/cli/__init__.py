"""The ``temtool`` command line: the Typer app (:mod:`temtool.cli.app`), rich rendering
(:mod:`temtool.cli.render`) and the settings of the command line's own process
(:mod:`temtool.cli.process`)."""

import sys

from temtool.cli.process import configure_process, handle_sigterm

__all__ = ["run"]


def run() -> None:
    """The ``temtool`` console script (and ``python -m temtool.cli``): the process settings
    for the command about to run, SIGTERM handled as Ctrl-C, then
    :func:`temtool.cli.app.main`. The app is imported after the settings, because NumPy reads
    them as it loads."""
    configure_process(sys.argv[1:])
    handle_sigterm()
    from temtool.cli.app import main

    main()
