"""The "FATE Splats" render engine and the numpy runtime that feeds it.

Map images + bindings + the evaluated head mesh → world-space Gaussians (:mod:`.runtime`),
drawn by one GPU splat drawer (:mod:`.drawer`) for the viewport and for final renders
(:mod:`.render_engine`).

May import: :mod:`addon.rig` (bindings, flame_math), :mod:`addon.errors`; bpy, gpu, numpy.
"""
