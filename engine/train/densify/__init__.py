"""Densification of UV-bound Gaussians: one strategy class per method (FATE §3.2 sampling, 3DGS
threshold, STAvatar temporal), a shared prune / opacity-reset schedule, and the set edits that keep Adam in step.

``config`` (torch-free) · ``base`` (the interface) · ``sampling`` · ``threshold`` · ``temporal`` · ``ops`` ·
``factory.make_strategy``.
"""
