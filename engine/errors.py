"""Exception hierarchy of the engine.

Every error a user can cause (bad file, bad parameter, missing model) is a
:class:`FateError` subclass whose message says *where* (path, key, shape) and
*what was expected versus found*. ``assert`` is used only for internal
invariants. The worker turns these into ``error`` events (message + traceback
text); nothing torch-typed crosses the process boundary.
"""


class FateError(Exception):
    """Base class of all user-facing engine errors."""


class HeadModelError(FateError):
    """A FLAME-format head model (pkl/npz/obj) is missing, malformed or unsafe."""


class DatasetError(FateError):
    """A tracked dataset folder is missing files or holds inconsistent values."""


class AvatarError(FateError):
    """An avatar folder (checkpoint, bindings, maps) is missing or inconsistent."""


class MapsError(AvatarError):
    """A UV attribute map has a wrong channel count, NaN/Inf values or a bad manifest."""


class ConfigError(FateError):
    """A job configuration has unknown keys or out-of-range values."""


class CancelledError(FateError):
    """A job stopped because the user asked it to (SIGTERM or a ``cancel`` line)."""


class TrackError(FateError):
    """A video cannot be tracked: unreadable, too short to split, or no face in too many frames."""


class DemoError(FateError):
    """A stage of the main job failed (the message names the stage and its log file)."""


class OutputError(FateError):
    """An output folder cannot be written: not writable, not enough free space, or a write failed
    (e.g. the disk filled up); the message names the folder or file."""


class FolderLockedError(OutputError):
    """Another job holds the output folder's lock (``.fate.lock``: its owner's pid, host and job)."""


class DivergedError(FateError):
    """Training or baking produced NaN/Inf values; the job stopped and kept the last good checkpoint."""


class CompletionError(FateError):
    """A full-head completion generator (``--completion_generator module:function``) cannot be
    loaded or returned images of the wrong size, type or with NaN (the message names it)."""


class CancelInterrupt(BaseException):
    """Raised asynchronously (from the cancel handlers, in the main thread) when a job is cancelled
    while it has nothing worth saving (loading, rendering): like ``KeyboardInterrupt``, it is a
    ``BaseException`` so that a broad ``except Exception`` cannot swallow it. ``run_job`` turns it
    into a ``cancelled`` event and exit code 130."""
