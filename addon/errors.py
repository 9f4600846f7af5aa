"""Errors of the Blender side (mirrors the engine's hierarchy by name; the engine is not imported).

Operators catch :class:`FateAddonError` once and ``self.report({'ERROR'}, str(err))``; messages say
where (file, key, shape), what was expected versus found, and what to do.
"""


class FateAddonError(Exception):
    """Base class of user-facing errors raised by the add-on."""


class AvatarError(FateAddonError):
    """An avatar folder (blender/head.npz, bindings, tracking, maps) is missing or inconsistent."""


class MapsError(AvatarError):
    """A map image or maps.json is missing, unreadable, or cannot be saved safely."""


class WorkerError(FateAddonError):
    """The worker (engine subprocess) cannot start, crashed, or reported an error."""


class SetupError(FateAddonError):
    """Preferences are incomplete or wrong (FLAME folder, worker Python, dataset folder)."""


class SplatError(FateAddonError):
    """A head object's bindings, maps or mesh cannot be turned into Gaussians, or a camera
    cannot be drawn by the splat engine.

    The message names the object / image / property and says what was expected and found.
    """
