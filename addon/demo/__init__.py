"""Blender side of the developers' main job (``engine/demo.py``); run as ``python -m addon.demo``
(:mod:`.__main__`)."""
