"""The avatar folder's files as the Blender side reads and writes them — numpy and the standard
library only, never bpy, so everything here is testable anywhere.

- :mod:`.avatar`: ``blender/head.npz``, ``blender/bindings.npz``, ``tracking.npz`` and
  ``maps/maps.json`` → checked plain arrays (the one place that knows those file names);
- :mod:`.exr`: a minimal scanline OpenEXR writer and header reader (Sync Maps);
- :mod:`.ply`: 3DGS PLY splat files (Export Splats).

May import: :mod:`addon.errors`.
"""
