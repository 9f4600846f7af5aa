"""The imported avatar as Blender data: the rig that reproduces FLAME exactly, its keyframes and
drivers, the map images and material, and the custom properties that mark it.

- :mod:`.flame_math`: numpy FLAME / camera maths (no bpy);
- :mod:`.animation`: keyframes and drivers, portable across Blender 4.2–5.x;
- :mod:`.bindings`: object markers and custom-property names, and the look-ups built on them
  (bindings, map images, avatar folder, head object);
- :mod:`.material`: map files as image datablocks, and the material that paints the colour map;
- :mod:`.importer`: Import Avatar (builds all of the above from an avatar folder).

May import: :mod:`addon.files`, :mod:`addon.errors`; bpy, numpy, mathutils.
"""
