"""Neural baking (FATE §3.3): discrete Gaussians → continuous, editable UV maps.

``config`` (the job) · ``bakenet`` (the U-Net) · ``channels`` (raw ↔ activated maps) ·
``direct_fit`` (maps without a network) · ``baker`` (the loop; ``bake(cfg)``).
"""
