"""``python -m engine <verb> ...``: see :mod:`engine.jobs.cli`."""

import sys

from engine.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
