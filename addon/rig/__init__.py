"""The imported avatar as Blender data: the rig that reproduces FLAME exactly, its keyframes and
drivers, the map images and material, and the custom properties that mark it.

- :mod:`.flame_math`: numpy FLAME / camera maths (no bpy);
- :mod:`.animation`: keyframes and drivers, portable across Blender 4.2–5.x;
- :mod:`.bindings`: object markers and custom-property names, and the look-ups built on them
  (bindings, map images, avatar folder, head object);
- :mod:`.armature`, :mod:`.mesh`, :mod:`.drivers`, :mod:`.tracking`: the builders of the rig,
  the head mesh with its shape keys, the drivers that make it equal FLAME, the tracked sequence
  and camera;
- :mod:`.material`: map files as image datablocks, and the material that paints the colour map;
- :mod:`.importer`: Import Avatar (reads the folder, calls the builders).

May import: :mod:`addon.files`, :mod:`addon.errors`; bpy, numpy, mathutils.
"""
