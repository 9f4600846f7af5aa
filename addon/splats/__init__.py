"""The "FATE Splats" render engine and the numpy runtime that feeds it.

Map images + bindings + the evaluated head mesh → world-space Gaussians (:mod:`.runtime`),
drawn by one GPU splat drawer (:mod:`.drawer`) for the viewport and for final renders
(:mod:`.render_engine`), which also draws the scene's other meshes (:mod:`.scene_meshes`). On
Blender ≥ 5.3 the avatar is also a native Gaussian-splat point cloud placed by Geometry Nodes
(:mod:`.native`) that Cycles and EEVEE render; :mod:`.composite` sets up the Cycles/EEVEE
composite for older versions; :mod:`.export` writes 3DGS PLY files; :mod:`.conventions` is the
one place our colour / opacity / scale / rotation conventions become the standard 3DGS ones.

May import: :mod:`addon.rig` (bindings, flame_math), :mod:`addon.files`, :mod:`addon.errors`;
bpy, gpu, numpy.
"""
