"""FATE engine: reconstruction, baking and rendering of Gaussian head avatars (torch).

Runs in its own interpreter (`python -m engine ...`); never imports bpy.
"""

__version__ = "0.1.0"
