"""What happens to the map images after import: Sync Maps (:mod:`.sync`) saves painted maps back
to their files, after a backup, and tells the splat runtime.

May import: :mod:`addon.files`, :mod:`addon.rig`, :mod:`addon.splats`, :mod:`addon.errors`.
"""
