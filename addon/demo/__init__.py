"""Blender side of the developers' main job (``engine/demo.py``): Cycles ground truth and the
final Blender stage. Not an artist feature: the extension zip leaves this package out
(``blender_manifest.toml``), the engine runs it from the repository as subprocesses, each with a
JSON config::

    python -m addon.demo cycles --config cycles.json
    python -m addon.demo final  --config final.json

Imports bpy, numpy and this add-on's modules only (never torch or the ``engine`` package).
Stdout speaks the worker protocol (docs/PROTOCOL.md) as job ``demo-blender``: ``progress``
events (stage, step, total) while a stage runs, then one ``done`` event carrying the stage's
result (or ``error``). Anything else Blender prints is kept by the caller in a log file.

``cycles`` (:mod:`.cycles`): builds the demo subject (a folder in the avatar export layout:
``blender/head.npz``, ``tracking.npz``, plus ``albedo.png``) with
:func:`addon.rig.importer.import_avatar` — the same rig, shape keys, drivers and tracked camera
as any imported avatar, so Blender's deformation is the engine's FLAME forward — gives it a
diffuse material with the albedo texture, soft view-independent light (a bright uniform world
and a large soft sun), and renders every tracked frame with Cycles on the CPU into RGBA PNGs
(transparent film, Standard view transform, so pixel values are the albedo's encoded colours
wherever the light is unoccluded).

``final`` (:mod:`.final`): in a Blender whose user folder has the built extension installed
(the caller sets ``BLENDER_USER_RESOURCES``), enables it, runs its operators Import Avatar and
Sync Maps, renders with its "FATE Splats" engine (test frames before and after a scripted
texture edit, :mod:`.logo`, and a 360° turntable) and saves ``demo.blend``.
"""
