"""The avatar model: FLAME-format head models and their LBS layer, the procedural demo head, the
mouth-closing faces, UV-bound Gaussians, learnt blendshapes, tracking corrections, the Avatar."""
