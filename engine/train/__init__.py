"""Training (FATE §3.1–3.2, §3.5): the config, the loop, the optimiser, checkpoints, the losses and
densification (``engine.train.densify``).

Kept light: importing ``engine.train.config`` must not import torch.
"""
