"""The developers' main job and synthetic ground truth (``python -m engine demo`` / ``synth``).

Not part of the Blender extension (``blender_manifest.toml`` excludes this folder).
"""
