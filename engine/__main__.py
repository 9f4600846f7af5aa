"""``python -m engine <verb> ...``: see :mod:`engine.jobs.cli`."""

import gc
import sys

from engine.jobs.cli import main

if __name__ == "__main__":
    code = main()
    # The job is over and its last event written. Exempt what is alive from the interpreter's final
    # garbage collection: traversing torch's objects there takes 2–5 s on a busy machine, time by
    # which a cancelled worker should long have exited (docs/RELIABILITY.md).
    gc.freeze()
    sys.exit(code)
