"""FATE Avatar — a Blender extension for FATE Gaussian head avatars.

Train (dataset → avatar), bake (avatar → UV maps), import (rigged, animated, paintable head),
paint, sync, render. Registers ``addon`` (preferences, properties, job handlers, render engine),
``operators`` and ``panels``. Never imports the torch-side ``engine`` package: that runs in its
own interpreter (``python -m engine``) with this folder on PYTHONPATH.

Imports are done inside :func:`register` so importing this package has no side effects.
"""


def register():
    from . import addon, operators, panels

    addon.register()
    operators.register()
    panels.register()


def unregister():
    from . import addon, operators, panels

    panels.unregister()
    operators.unregister()
    addon.unregister()
