"""Benchmarks (``python -m engine bench``); not part of the Blender extension."""
