"""Per-frame corrections of the tracked FLAME parameters and camera (supp. §7.1)."""

from __future__ import annotations

import torch

from engine.geometry.cameras import Camera
from engine.geometry.rotations import axis_angle_to_matrix


class TrackingRefinement(torch.nn.Module):
    """Per-frame corrections of the tracked expression, pose and camera (optional, supp. §7.1).

    Camera correction: a world-space rotation (axis-angle) and translation applied as
    viewmat' = viewmat · [R(δr) | δt].
    """

    def __init__(self, num_frames: int, num_expr: int, num_pose: int, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self.d_expr = torch.nn.Parameter(torch.zeros(num_frames, num_expr), requires_grad=enabled)
        self.d_pose = torch.nn.Parameter(torch.zeros(num_frames, num_pose), requires_grad=enabled)
        self.d_cam = torch.nn.Parameter(torch.zeros(num_frames, 6), requires_grad=enabled)

    def camera(self, i: int, cam: Camera) -> Camera:
        if not self.enabled:
            return cam
        delta = torch.eye(4, device=cam.viewmat.device)
        delta = delta.clone()
        delta[:3, :3] = axis_angle_to_matrix(self.d_cam[i, :3])
        delta[:3, 3] = self.d_cam[i, 3:]
        return Camera(cam.viewmat @ delta, cam.K, cam.width, cam.height)
