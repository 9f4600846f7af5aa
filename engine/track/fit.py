"""The batched landmark fit: FLAME parameters of every frame from its 2D MediaPipe landmarks.

One optimisation over all frames at once (torch, CPU or CUDA), coarse to fine:

1. initialisation per frame from MediaPipe's own 3D landmarks: a similarity (Umeyama 1991) between
   them and the template's embedded points gives the head rotation and, with the focal length,
   the translation;
2. rigid stage: head rotation and translation per frame and one focal length;
3. full stage: + identity shape (shared), expression, jaw and eye rotations (eyes from the irises)
   per frame.

Objective (per frame t, landmark l with weight w_l): a robust reprojection term
``w_l · c² log(1 + |π(x_tl) − u_tl|² / c²)`` (Cauchy/Lorentzian, c in pixels scaled with the face
size), temporal smoothness ``|θ_{t+1} − 2θ_t + θ_{t−1}|²`` (second differences: jitter, not motion)
of every per-frame parameter, a pull of the head rotation towards the one MediaPipe's own 3D
landmarks give (on the demo head the 2D-only fit under-reads yaw by ~25 % and pitch by ~60 %,
a local minimum with a *higher* residual; the pull removes it: 10.3° → 3.5° mean error on the test
preset's clip), and priors on shape, expression, jaw side rotation, eye rotation and the focal length. Face-oval landmarks are weighted
by how squarely the surface faces the camera (they slide along the silhouette when the head turns).
Deterministic: no random numbers; Adam from a deterministic start.

Frames: FLAME/world is the head's frame (+Y up, +Z out of the face); the camera is fixed at the
world origin looking down −Z (OpenCV ``viewmat = diag(1, −1, −1)``) until :func:`recentre` moves
the world origin to the head. Head motion is FLAME's global pose (root joint) + translation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from engine.model.flame_layer import FlameLayer
from engine.model.head_model import HeadModel
from engine.track.embedding import LandmarkEmbedding
from engine.track.landmark_model import LandmarkHead
from engine.track.landmarks_meta import landmark_weights, oval_mask

log = logging.getLogger(__name__)

CAMERA_R = np.diag([1.0, -1.0, -1.0])
"""World→camera rotation of the tracker's fixed camera (OpenCV axes, looking down world −Z)."""


@dataclass
class FitSettings:
    """Weights and schedule of the landmark fit (see the module doc)."""

    rigid_steps: int = 200
    fit_steps: int = 400
    num_shape: int = 100
    num_expr: int = 50
    robust_px: float = 3.0  # c of the Cauchy kernel (pixels) for a face 100 px between the outer eye corners
    smooth: float = 1.0
    w_shape: float = 2e-3
    w_expr: float = 5e-4
    w_jaw_side: float = 10.0
    w_eyes: float = 0.05
    w_focal: float = 1e-3
    w_mp_rotation: float = 500.0  # pull towards the rotation of MediaPipe's own 3D landmarks (rad²)
    focal_fixed: bool = False


@dataclass
class FitResult:
    """Fitted parameters of T frames (numpy float32; world = the head's frame, see module doc).

    Attributes:
        shape: [S]; expr: [T, E]; pose: [T, J*3] axis-angle (root, neck=0, jaw, eyes);
        translation: [T, 3] meters; focal: pixels of the images the landmarks are in;
        viewmat: [4, 4] the fixed camera (world→camera, OpenCV); residual_px: [T, L] reprojection
        error per frame and landmark (pixels); landmarks_px: [T, L, 2] the fitted projections.
    """

    shape: np.ndarray
    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    focal: float
    viewmat: np.ndarray
    residual_px: np.ndarray
    landmarks_px: np.ndarray


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ≈ s R src + t`` minimising squared error (Umeyama 1991, Eq. 40–42).

    Args:
        src, dst: [N, 3] corresponding points.
    Returns:
        s, R [3, 3] (det +1), t [3].
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / max(var, 1e-12))
    return s, R, mu_d - s * R @ mu_s


def initial_rigid(lm3d: np.ndarray, template_pts: np.ndarray, root_joint: np.ndarray, focal: float,
                  principal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame head rotation (axis-angle) and translation from MediaPipe's 3D landmarks.

    Args:
        lm3d: [T, L, 3] MediaPipe landmarks (x, y pixels; z relative depth, pixels) of the
            embedded landmarks.
        template_pts: [L, 3] their neutral positions on the template (world, meters).
        root_joint: [3] the root joint (FLAME rotates about it).
        focal: pixels; principal: [2] pixels.
    Returns:
        rot [T, 3] axis-angle (radians), translation [T, 3] meters (world).
    """
    T = len(lm3d)
    rots, trans = np.zeros((T, 3)), np.zeros((T, 3))
    mean_x = template_pts.mean(0)
    for t in range(T):
        s, R_cv, _ = umeyama(template_pts, lm3d[t].astype(np.float64))
        R = CAMERA_R.T @ R_cv
        depth = focal / max(s, 1e-9)
        uv = lm3d[t, :, :2].mean(0)
        c_cam = np.array([(uv[0] - principal[0]) / focal * depth, (uv[1] - principal[1]) / focal * depth, depth])
        c_world = CAMERA_R.T @ c_cam
        trans[t] = c_world - R @ (mean_x - root_joint) - root_joint
        rots[t] = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
    return rots, trans


def _robust(r2: Tensor, c: float) -> Tensor:
    return c * c * torch.log1p(r2 / (c * c))


class LandmarkFit:
    """The fit's state: parameters, data and the objective (see the module doc).

    Args:
        head: head model; embedding: its landmark embedding.
        lm2d: [T, 478, 2] detected landmarks (pixels), lm3d: [T, 478, 3] MediaPipe 3D.
        times: [T] frame numbers (gaps of dropped frames weaken the smoothness across them).
        focal: initial (or known) focal length, pixels; principal: [2] principal point, pixels.
        settings: weights and steps; device: torch device.
    """

    def __init__(self, head: HeadModel, embedding: LandmarkEmbedding, lm2d: np.ndarray, lm3d: np.ndarray,
                 times: np.ndarray, focal: float, principal: np.ndarray, settings: FitSettings,
                 device: torch.device):
        self.s = settings
        self.device = device
        self.model = LandmarkHead(head, embedding, settings.num_shape, settings.num_expr).to(device)
        idx = embedding.mediapipe_index
        self.target = torch.as_tensor(lm2d[:, idx], dtype=torch.float32, device=device)  # [T, L, 2]
        T = len(lm2d)
        self.T, self.J = T, head.num_joints
        ext = lm2d[:, idx, :2].max(axis=1) - lm2d[:, idx, :2].min(axis=1)
        self.face_px = float(np.median(ext.max(axis=1)))  # landmark extent (forehead to chin), pixels
        self.c = settings.robust_px * self.face_px / 250.0  # the extent is ~2.5 outer eye-corner distances
        self.w_l = torch.as_tensor(landmark_weights(idx), dtype=torch.float32, device=device)
        self.w_rigid = torch.as_tensor(landmark_weights(idx, rigid=True), dtype=torch.float32, device=device)
        self.oval = torch.as_tensor(oval_mask(idx), device=device)
        gap = np.maximum(np.diff(np.asarray(times, np.float64)), 1.0)
        w_gap = 1.0 / (gap[1:] * gap[:-1]) if T > 2 else np.zeros(0)  # second differences across gaps count less
        self.w_gap = torch.as_tensor(w_gap, dtype=torch.float32, device=device)[:, None]
        self.principal = torch.as_tensor(principal, dtype=torch.float32, device=device)
        self.log_f0 = math.log(focal)
        tmpl_pts = embedding.points(head.v_template, head.faces)
        self.tmpl_normals = torch.as_tensor(_landmark_normals(head, embedding), dtype=torch.float32, device=device)
        root = (np.asarray(head.J_regressor) @ head.v_template)[0]
        rot0, tr0 = initial_rigid(lm3d[:, idx], tmpl_pts, root, focal, np.asarray(principal, np.float64))
        f32 = dict(dtype=torch.float32, device=device)
        P = torch.nn.Parameter
        self.rot = P(torch.as_tensor(rot0, **f32))
        self.rot_mp = torch.as_tensor(rot0, **f32)  # MediaPipe's 3D landmarks' rotation (Umeyama)
        # translation as the root joint's camera position (x/z, y/z, log(z/f)): the valley of
        # focal length vs distance (same image scale) is then along log_f alone
        self.root = torch.as_tensor(root, **f32)
        p_cam = (tr0 + root) @ CAMERA_R.T
        self.ab = P(torch.as_tensor(p_cam[:, :2] / p_cam[:, 2:3], **f32))
        self.log_zf = P(torch.as_tensor(np.log(p_cam[:, 2] / focal), **f32))
        self.log_f = P(torch.tensor(self.log_f0, **f32))
        self.shape = P(torch.zeros(1, self.model.num_shape, **f32))
        self.expr = P(torch.zeros(T, self.model.num_expr, **f32))
        self.jaw = P(torch.zeros(T, 3, **f32))
        self.eyes = P(torch.zeros(T, 3, **f32))
        self.frame_weight = torch.ones(T, 1, **f32)

    # ------------------------------------------------------------------ model
    def pose(self) -> Tensor:
        """[T, J*3]: root = head rotation, neck 0, jaw, both eyes the same gaze."""
        z = torch.zeros_like(self.rot)
        parts = [self.rot, z, self.jaw] + [self.eyes] * (self.J - 3)
        return torch.cat(parts[: self.J], dim=1)

    @property
    def trans(self) -> Tensor:
        """[T, 3] FLAME translation (world, meters) from the camera-space parameterisation."""
        z = (self.log_zf + self.log_f).exp()[:, None]
        p_cam = torch.cat([self.ab * z, z], dim=1)
        R = torch.as_tensor(CAMERA_R, dtype=z.dtype, device=z.device)
        return p_cam @ R - self.root

    def project(self) -> tuple[Tensor, Tensor]:
        """Projected landmarks [T, L, 2] (pixels) and camera-frame points [T, L, 3]."""
        lm, _ = self.model(self.shape, self.expr, self.pose(), self.trans)
        R = torch.as_tensor(CAMERA_R, dtype=lm.dtype, device=lm.device)
        pc = lm @ R.T
        f = self.log_f.exp()
        uv = pc[..., :2] / pc[..., 2:3].clamp_min(1e-4) * f + self.principal
        return uv, pc

    def visibility(self) -> Tensor:
        """[T, L] weight of each landmark from how its surface faces the camera (oval only)."""
        with torch.no_grad():
            R = axis_angle_to_matrix(self.rot)  # [T, 3, 3]
            n = torch.einsum("tij,lj->tli", R, self.tmpl_normals)  # world
            facing = n[..., 2]  # the camera looks down −Z: +Z faces it
            w = ((facing - 0.1) / 0.4).clamp(0.0, 1.0)
            return torch.where(self.oval[None], w, torch.ones_like(w))

    # ------------------------------------------------------------------ objective
    def loss(self, full: bool) -> tuple[Tensor, dict]:
        uv, _ = self.project()
        r2 = (uv - self.target).square().sum(-1)
        w = (self.w_l if full else self.w_rigid)[None] * self.vis * self.frame_weight
        data = (w * _robust(r2, self.c)).sum() / w.sum() / (self.c ** 2)
        s = self.s
        def smooth(x, scale):  # second differences: jitter, not motion
            if len(x) < 3:
                return x.sum() * 0.0
            d = (x[2:] - 2 * x[1:-1] + x[:-2]) * self.w_gap
            return d.square().sum(-1).mean() * scale
        terms = {"data": data,
                 "smooth_rot": smooth(self.rot, 40.0 * s.smooth),
                 "smooth_trans": smooth(self.trans, 4e3 * s.smooth),
                 "focal": s.w_focal * (self.log_f - self.log_f0).square(),
                 "mp_rotation": s.w_mp_rotation * (self.rot - self.rot_mp).square().sum(-1).mean()}
        if full:
            terms.update({
                "smooth_expr": smooth(self.expr, 0.02 * s.smooth),
                "smooth_jaw": smooth(self.jaw, 20.0 * s.smooth),
                "smooth_eyes": smooth(self.eyes, 2.0 * s.smooth),
                "shape": s.w_shape * self.shape.square().sum(),
                "expr": s.w_expr * self.expr.square().sum(-1).mean(),
                "jaw_side": s.w_jaw_side * self.jaw[:, 1:].square().sum(-1).mean()
                + 10.0 * torch.relu(-self.jaw[:, 0]).square().mean(),
                "eyes": s.w_eyes * self.eyes.square().sum(-1).mean()})
        return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}

    def _run(self, params: list[tuple[Tensor, float]], steps: int, full: bool, progress=None, cancel=None,
             stage: str = "fit") -> dict:
        opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in params])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=0.05 * params[0][1])
        stats: dict = {}
        for k in range(steps):
            if k % 25 == 0:
                self.vis = self.visibility()
                if cancel is not None:
                    cancel.raise_if_requested()
            opt.zero_grad(set_to_none=True)
            loss, stats = self.loss(full)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(stage, k + 1, steps)
        return stats

    def run(self, progress=None, cancel=None) -> FitResult:
        """Rigid then full stage (module doc); returns the parameters and residuals."""
        s = self.s
        self.vis = self.visibility()
        rigid = [(self.rot, 1e-2), (self.ab, 2e-3), (self.log_zf, 5e-3)] + ([] if s.focal_fixed else [(self.log_f, 1e-2)])
        st = self._run(rigid, s.rigid_steps, False, progress, cancel, "fit_rigid")
        log.info("rigid fit: %s", {k: round(v, 4) for k, v in st.items()})
        self._downweight_outlier_frames()
        full = rigid + [(self.shape, 2e-2), (self.expr, 3e-2), (self.jaw, 5e-3), (self.eyes, 5e-3)]
        st = self._run(full, s.fit_steps, True, progress, cancel, "fit")
        log.info("full fit: %s", {k: round(v, 4) for k, v in st.items()})
        return self.result()

    def _downweight_outlier_frames(self) -> None:
        """Frames whose median residual after the rigid stage is > 4x the clip's median (and > 2 c)
        count a tenth (a wrong detection must not drag its neighbours)."""
        with torch.no_grad():
            uv, _ = self.project()
            med = (uv - self.target).norm(dim=-1).median(dim=1).values
            ref = med.median()
            bad = (med > 4 * ref) & (med > 2 * self.c)
            self.frame_weight = torch.where(bad, 0.1, 1.0)[:, None]
            self.outlier_frames = torch.nonzero(bad).flatten().tolist()
        if self.outlier_frames:
            log.info("landmark fit: %d outlier frames down-weighted", len(self.outlier_frames))

    @torch.no_grad()
    def result(self) -> FitResult:
        uv, _ = self.project()
        res = (uv - self.target).norm(dim=-1)
        f = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        view = np.eye(4)
        view[:3, :3] = CAMERA_R
        return FitResult(f(self.shape[0]), f(self.expr), f(self.pose()), f(self.trans), float(self.log_f.exp()),
                         view, f(res), f(uv))


def search_focal(head: HeadModel, embedding: LandmarkEmbedding, lm2d: np.ndarray, lm3d: np.ndarray,
                 times: np.ndarray, principal: np.ndarray, image_size: float, settings: FitSettings,
                 device: torch.device, frames: int = 24, grid=(0.5, 0.8, 1.2, 1.8, 2.7, 4.0)) -> tuple[float, dict]:
    """The focal length (pixels) that best explains the landmarks: short fits with the focal fixed
    at each ``grid`` x ``image_size`` on ``frames`` evenly spaced frames, then a parabola through
    the best value's neighbours in log focal. (Focal length and distance share one valley of the
    objective that gradient steps follow slowly; the grid steps across it.)

    Returns:
        focal (pixels), {grid focal: final data term}.
    """
    pick = np.unique(np.linspace(0, len(lm2d) - 1, min(frames, len(lm2d))).round().astype(int))
    scores = {}
    quick = FitSettings(**{**settings.__dict__, "rigid_steps": 120, "fit_steps": 120, "focal_fixed": True})
    for g in grid:
        fit = LandmarkFit(head, embedding, lm2d[pick], lm3d[pick], times[pick], g * image_size, principal, quick,
                          device)
        fit.run()
        scores[g * image_size] = fit.loss(True)[1]["data"]
    fs = np.log(np.array(list(scores)))
    ys = np.array(list(scores.values()))
    k = int(np.argmin(ys))
    if 0 < k < len(fs) - 1:
        a, b, c = np.polyfit(fs[k - 1:k + 2], ys[k - 1:k + 2], 2)
        best = float(np.exp(np.clip(-b / (2 * a), fs[k - 1], fs[k + 1]))) if a > 0 else float(np.exp(fs[k]))
    else:
        best = float(np.exp(fs[k]))
    return best, {round(f, 1): round(float(v), 5) for f, v in scores.items()}


@torch.no_grad()
def reproject(head: HeadModel, embedding: LandmarkEmbedding, fit: FitResult, principal: np.ndarray,
              lm2d: np.ndarray) -> FitResult:
    """``fit`` with its landmark projections [T, L, 2] and residuals [T, L] (pixels) recomputed for
    its parameters against the detections ``lm2d`` [T, 478, 2]."""
    model = LandmarkHead(head, embedding, len(fit.shape), fit.expr.shape[1])
    lm, _ = model(torch.as_tensor(fit.shape)[None], torch.as_tensor(fit.expr), torch.as_tensor(fit.pose),
                  torch.as_tensor(fit.translation))
    pc = lm.double().numpy() @ fit.viewmat[:3, :3].T + fit.viewmat[:3, 3]
    uv = pc[..., :2] / pc[..., 2:3] * fit.focal + np.asarray(principal)
    res = np.linalg.norm(uv - lm2d[:, embedding.mediapipe_index], axis=-1)
    return FitResult(fit.shape, fit.expr, fit.pose, fit.translation, fit.focal, fit.viewmat,
                     res.astype(np.float32), uv.astype(np.float32))


def _landmark_normals(head: HeadModel, emb: LandmarkEmbedding) -> np.ndarray:
    """Unit normals [L, 3] of the template at the embedded landmarks' triangles."""
    tri = np.asarray(head.v_template, np.float64)[np.asarray(head.faces)[emb.face_index]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def recentre(fit: FitResult, root_joint: np.ndarray) -> FitResult:
    """Moves the world origin so the head's median position is at the origin and the camera at
    ``(0, 0, d)`` in front of it (the same images; translations then stay near zero)."""
    d = -float(np.median(fit.translation[:, 2] + root_joint[2]))
    view = fit.viewmat.copy()
    view[:3, 3] = -CAMERA_R @ np.array([0.0, 0.0, d])
    tr = fit.translation.copy()
    tr[:, 2] += d
    return FitResult(fit.shape, fit.expr, fit.pose, tr, fit.focal, view, fit.residual_px, fit.landmarks_px)


def fitted_vertices(head: HeadModel, fit: FitResult, chunk: int = 64) -> np.ndarray:
    """[T, V, 3] posed vertices of the fit (world, meters)."""
    layer = FlameLayer(head)
    out = []
    shape = torch.as_tensor(fit.shape)[None]
    for i in range(0, len(fit.expr), chunk):
        v, _ = layer(shape, torch.as_tensor(fit.expr[i:i + chunk]), torch.as_tensor(fit.pose[i:i + chunk]))
        out.append((v + torch.as_tensor(fit.translation[i:i + chunk])[:, None]).numpy())
    return np.concatenate(out)
