"""Run the command line as ``python -m skbert`` (and as the ``skbert`` script)."""

import sys


def run() -> None:
    """Import the command line and run it; a Ctrl-C while it imports (numpy,
    pandas) is reported as one line with status 130, as one while it runs."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("skbert: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())


if __name__ == "__main__":
    run()
