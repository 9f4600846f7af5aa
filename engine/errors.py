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


class DemoError(FateError):
    """A stage of the main job failed (the message names the stage and its log file)."""


class CompletionError(FateError):
    """A full-head completion generator (``--completion_generator module:function``) cannot be
    loaded or returned images of the wrong size, type or with NaN (the message names it)."""
