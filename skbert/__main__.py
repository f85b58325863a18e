"""Run the command line as ``python -m skbert``."""

import sys

if __name__ == "__main__":
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("skbert: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
