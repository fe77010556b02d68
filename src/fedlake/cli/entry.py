"""The installed `fedlake` command: the CLI, or how to install it on a light install."""

from __future__ import annotations

import sys


def script() -> None:
    """Run the CLI; without its packages (a light client install), say how to get them."""
    try:
        from fedlake.cli.main import main  # typer and rich: the cli extra
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"error: the fedlake command needs {exc.name!r}, which is not installed; install "
            "the command-line packages with: pip install 'fedlake[cli]' (or 'fedlake[all]' "
            "for the simulator, the lakehouse and torch too)\n"
        )
        raise SystemExit(2) from None
    main()
