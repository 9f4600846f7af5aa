"""Add-on preferences (:mod:`.preferences`) and the scene's property group (:mod:`.properties`).

May import: :mod:`addon.extension`, :mod:`addon.jobs` (worker paths); bpy.
"""
