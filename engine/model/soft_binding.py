"""UV-adaptive soft binding (STAvatar §3.2, Fig. 3a–b): expression-dependent offsets of the
UV-bound Gaussians, predicted by a small dual-branch CNN in UV space.

Hard binding (FATE Eq. 2–4) moves a Gaussian only with its face. Soft binding adds a per-frame
offset δ to each Gaussian's bound parameters θ̃ (θ* = θ̃ + δ):

============== ===== ======================================================================
slice of δ     size  meaning
============== ===== ======================================================================
``[0:3]``      3     position, in the face frame (columns e1, e2, n), multiples of the face
                     scale k_f: μ* = μ̃ + k_f R_f δ_p
``[3:6]``      3     rotation in the face frame: r* = q(δ_r) ⊗ r̃ with the quaternion
                     q(δ_r) = (1, δ_r / 2) (normalised with r*), a turn by 2·atan(|δ_r| / 2)
                     ≈ |δ_r| radians about δ_r (no trigonometry: cheap on the CPU)
``[6:9]``      3     log scale: s* = s̃ · exp(δ_s)
============== ===== ======================================================================

δ = 0 is hard binding exactly (``place_soft`` then equals ``UVGaussians.place`` bit for bit).

The network (:class:`SoftBindingNet`) sees, at ``R × R`` UV texels (OBJ convention, image rows
top first):

- the *identity branch*: a fixed reference — the reference frame's image unwrapped to UV (RGB +
  a visibility channel; :func:`unwrap_image`) and the UV position map of the reference frame's
  canonical mesh (7 channels, computed once);
- the *motion branch*: the UV displacement map of the frame — the vertex offsets from the
  reference canonical mesh to the frame's canonical mesh, rasterised to UV (3 channels).

"Canonical" mesh: plain FLAME (no learnt blendshapes) with the frame's expression, jaw and eye
pose and the root and neck rotations zeroed, without translation — so the displacement holds
the expression, not the head motion (INSTA-style datasets put head rotation into the camera
anyway). The reference frame is the most neutral training frame (smallest ‖expr‖² + ‖jaw‖²).
Both branches are encoded to half resolution, fused, decoded with skip connections and mapped by
a zero-initialised 1×1 convolution to the 9-channel offset map, so training starts from hard
binding. Each Gaussian samples the map bilinearly at its UV (:func:`gaussian_uv`), so new
children of densification get offsets too (STAvatar: "dynamic resampling").

Baking / Blender: the baked maps and the Blender runtime have no expression-dependent channels.
:func:`fold_static_offsets` folds the *mean* δ over the training frames into the hard Gaussians
(the static bake); the avatar folder's ``gaussians.safetensors`` holds that static bake and
``soft_binding.safetensors`` the network and the unfolded Gaussians, for evaluation
(docs/FORMATS.md; ``AvatarFolder.load(soft_binding=True)``). Why a static bake and no
expression-dependent basis for the shape keys: on the synthetic demo (docs/benchmarks.md, "Soft
binding and temporal densification"), the static bake is within 0.01 dB of the live network on
the test frames' full images, 0.06 dB on the mouth crop and 0.01 dB on the eyes — measured where
the offsets have little expression dependence to start with; re-measure on a real video
(``bench --suite binding --dataset ...``) before relying on it there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.data.sequence import resize_image
from engine.geometry.cameras import Camera
from engine.geometry.mesh_ops import barycentric_points, face_frames
from engine.geometry.rotations import quaternion_to_matrix
from engine.geometry.uv import sample_uv_texels
from engine.model.gaussians import UVGaussians, WorldGaussians, place_gaussians

OFFSET_CHANNELS = 9
"""δ per Gaussian: position (3), rotation (3), log scale (3) (module table)."""

IDENTITY_CHANNELS = 7
"""Identity branch input: unwrapped reference RGB (3) + visibility (1) + UV position map (3)."""

MOTION_CHANNELS = 3
"""Motion branch input: UV displacement map (3)."""

DISPLACEMENT_SCALE = 0.01
"""Meters per unit of the displacement map the network sees (1 cm)."""

GLOBAL_JOINTS = ("root", "neck")
"""Joints whose rotation is removed from the canonical mesh (head motion, not expression)."""

ZBUFFER_RESOLUTION = 256
"""UV resolution of the dense surface points that make the unwrap's point z-buffer."""

OFFSET_FOLD_LIMIT = 0.999
"""Largest |normal offset| / shell a fold writes (atanh stays finite)."""

ZBUFFER_TOLERANCE = 2e-3
"""Meters behind the nearest surface point at which a texel still counts as visible."""


# ---------------------------------------------------------------------- UV rasterisation
class UVTexels(nn.Module):
    """The covered texels of an ``R × R`` UV layout and their surface bindings: rasterises
    per-vertex values to UV maps.

    Args:
        uvs: texture coordinates, OBJ convention. [T, 2]
        faces_uv: uv index per face corner (mesh + mouth faces). [F, 3] int64
        resolution: R, texels per side.
    """

    def __init__(self, uvs: np.ndarray, faces_uv: np.ndarray, resolution: int):
        super().__init__()
        s = sample_uv_texels(uvs, faces_uv, resolution)
        self.resolution = int(resolution)
        self.register_buffer("face_idx", torch.as_tensor(s.face_idx, dtype=torch.long))
        self.register_buffer("bary", torch.as_tensor(s.bary, dtype=torch.float32))
        self.register_buffer("linear", torch.as_tensor(s.texel[:, 0] * resolution + s.texel[:, 1], dtype=torch.long))

    def points(self, verts: Tensor, faces: Tensor) -> Tensor:
        """Surface point of every covered texel, in the frame of ``verts``. [M, 3]"""
        return barycentric_points(verts, faces, self.face_idx, self.bary)

    def to_map(self, values: Tensor) -> Tensor:
        """Per-texel values [M, C] → a UV map [C, R, R] (zero outside the islands)."""
        R = self.resolution
        out = values.new_zeros(values.shape[1], R * R)
        out[:, self.linear] = values.T
        return out.view(-1, R, R)

    def rasterize_vertices(self, values: Tensor, faces: Tensor) -> Tensor:
        """Per-vertex values [V, C] → UV map [C, R, R], barycentrically interpolated."""
        return self.to_map(barycentric_points(values, faces, self.face_idx, self.bary))


def gaussian_uv(face_idx: Tensor, bary: Tensor, uvs: Tensor, faces_uv: Tensor) -> Tensor:
    """UV coordinate of each Gaussian from its binding, OBJ convention. [N, 2]

    Args:
        face_idx: int64 [N]; bary: [N, 3].
        uvs: [T, 2]; faces_uv: int64 [F, 3].
    """
    return (bary[..., None] * uvs[faces_uv[face_idx]]).sum(dim=-2)


def sample_uv_map(m: Tensor, uv: Tensor) -> Tensor:
    """Bilinear, clamp-to-edge lookup of a map [C, R, R] (row 0 = v≈1) at uv [N, 2] → [N, C]."""
    grid = torch.stack([2.0 * uv[:, 0] - 1.0, 1.0 - 2.0 * uv[:, 1]], dim=-1).to(m.dtype)
    vals = F.grid_sample(m[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    return vals[0, :, 0, :].T


# ---------------------------------------------------------------------- the identity reference
@torch.no_grad()
def unwrap_image(image: Tensor, mask: Tensor, verts: Tensor, faces: Tensor, camera: Camera,
                 texels: UVTexels, dense: UVTexels | None = None) -> Tensor:
    """Unwraps a frame's image into UV: each covered texel takes the colour of the pixel its
    surface point projects to, where that point faces the camera and is not hidden.

    Visibility is the product of the subject mask, the face normal facing the camera and a point
    z-buffer of ``dense`` surface samples (a texel more than ``ZBUFFER_TOLERANCE`` behind the
    nearest sample in its pixel is hidden).

    Args:
        image: the frame, encoded colour in [0, 1]. [H, W, 3]
        mask: subject mask in [0, 1]. [H, W, 1]
        verts: the frame's posed vertices, world frame, meters. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
        camera: the frame's camera (OpenCV).
        texels: the UV layout to unwrap into.
        dense: denser texels for the z-buffer (default: ``texels``).
    Returns:
        RGB + visibility map, zero where not visible. [4, R, R]
    """
    H, W = image.shape[:2]
    R_cw, t_cw = camera.viewmat[:3, :3], camera.viewmat[:3, 3]

    def project(p: Tensor) -> tuple[Tensor, Tensor]:
        x = p @ R_cw.T + t_cw
        z = x[:, 2].clamp_min(1e-6)
        pix = (x[:, :2] / z[:, None]) @ camera.K[:2, :2].T + camera.K[:2, 2]
        return pix, x[:, 2]

    pts = texels.points(verts, faces)
    pix, z = project(pts)
    _, _, n_f = face_frames(verts, faces)
    facing = ((camera.center - pts) * n_f[texels.face_idx]).sum(-1) > 0
    inside = (z > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < W) & (pix[:, 1] >= 0) & (pix[:, 1] < H)
    dense = dense or texels
    dpix, dz = project(dense.points(verts, faces))
    dok = (dz > 0) & (dpix[:, 0] >= 0) & (dpix[:, 0] < W) & (dpix[:, 1] >= 0) & (dpix[:, 1] < H)
    zbuf = torch.full((H * W,), float("inf"), device=image.device)
    dlin = dpix[dok, 1].long() * W + dpix[dok, 0].long()
    zbuf.scatter_reduce_(0, dlin, dz[dok], reduce="amin")
    lin = pix[:, 1].clamp(0, H - 1).long() * W + pix[:, 0].clamp(0, W - 1).long()
    unoccluded = z <= zbuf[lin] + ZBUFFER_TOLERANCE
    grid = torch.stack([2.0 * pix[:, 0] / W - 1.0, 2.0 * pix[:, 1] / H - 1.0], dim=-1)
    both = torch.cat([image, mask], dim=-1).permute(2, 0, 1)[None]
    vals = F.grid_sample(both, grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    vis = (facing & inside & unoccluded).float() * (vals[:, 3] > 0.5).float()
    return texels.to_map(torch.cat([vals[:, :3] * vis[:, None], vis[:, None]], dim=1))


def reference_frame(expr: Tensor, pose: Tensor, frames: list[int], jaw: int | None) -> int:
    """The most neutral of ``frames``: smallest ‖expr‖² + ‖jaw pose‖².

    Args:
        expr: [T, E]; pose: [T, J·3] axis-angle.
        frames: candidate frame indices (the training split).
        jaw: index of the jaw joint, or None.
    """
    idx = torch.as_tensor(frames, dtype=torch.long)
    score = expr[idx].square().sum(-1)
    if jaw is not None:
        score = score + pose[idx, 3 * jaw:3 * jaw + 3].square().sum(-1)
    return int(idx[int(torch.argmin(score))])


def canonical_pose(pose: Tensor, joint_names: list[str]) -> Tensor:
    """``pose`` [..., J·3] with the rotations of ``GLOBAL_JOINTS`` zeroed (joint 0 if none of
    them is named)."""
    zero = [j for j, n in enumerate(joint_names) if n in GLOBAL_JOINTS] or [0]
    out = pose.clone()
    for j in zero:
        out[..., 3 * j:3 * j + 3] = 0
    return out


# ---------------------------------------------------------------------- the network
def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


class SoftBindingNet(nn.Module):
    """Dual-branch UV-space CNN (STAvatar Fig. 3b): identity [1, 7, R, R] + motion [1, 3, R, R]
    → feature-offset map [1, 9, R, R].

    Each branch: conv 3×3 (width) → conv 3×3 stride 2 (2·width); fusion: conv 3×3 on the
    concatenation at R/2, bilinear ×2, conv 3×3 on it plus both branches' full-resolution
    features (skip connections), then a zero-initialised 1×1 convolution to 9 channels.

    Args:
        width: channels of the first convolution of each branch.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = int(width)
        self.identity = nn.ModuleList([_conv(IDENTITY_CHANNELS, w), _conv(w, 2 * w, stride=2)])
        self.motion = nn.ModuleList([_conv(MOTION_CHANNELS, w), _conv(w, 2 * w, stride=2)])
        self.fuse = _conv(4 * w, 2 * w)
        self.decode = _conv(2 * w + 2 * w, w)
        self.head = nn.Conv2d(w, OFFSET_CHANNELS, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, identity: Tensor, motion: Tensor) -> Tensor:
        i0 = self.identity[0](identity)
        m0 = self.motion[0](motion)
        low = self.fuse(torch.cat([self.identity[1](i0), self.motion[1](m0)], dim=1))
        up = F.interpolate(low, size=i0.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.decode(torch.cat([up, i0, m0], dim=1)))


class SoftBinding(nn.Module):
    """The soft-binding model of one subject: network, fixed identity reference and the UV
    layout, with the head model's joint names (for the canonical pose).

    Args:
        texels: the UV layout at the network's resolution.
        identity: the identity-branch input. [7, R, R]
        ref_canonical: the reference frame's canonical vertices, meters. [V, 3]
        uvs: [T, 2]; faces_uv: mesh + mouth faces' uv indices, int64 [F, 3].
        joint_names: the head model's joints.
        width: network width.
    """

    def __init__(self, texels: UVTexels, identity: Tensor, ref_canonical: Tensor, uvs: Tensor,
                 faces_uv: Tensor, joint_names: list[str], width: int = 16):
        super().__init__()
        self.texels = texels
        self.joint_names = list(joint_names)
        self.width = int(width)
        self.register_buffer("identity", identity.float())
        self.register_buffer("ref_canonical", ref_canonical.float())
        self.register_buffer("uvs", uvs.float())
        self.register_buffer("faces_uv", faces_uv.long())
        self.net = SoftBindingNet(width)

    @property
    def resolution(self) -> int:
        return self.texels.resolution

    def displacement_map(self, canonical: Tensor, faces: Tensor) -> Tensor:
        """UV displacement map of a frame: (canonical − reference canonical) / DISPLACEMENT_SCALE,
        rasterised. canonical [V, 3] meters → [3, R, R]."""
        return self.texels.rasterize_vertices((canonical - self.ref_canonical) / DISPLACEMENT_SCALE, faces)

    def offset_map(self, canonical: Tensor, faces: Tensor) -> Tensor:
        """The feature-offset map of a frame. [9, R, R]"""
        motion = self.displacement_map(canonical, faces)
        return self.net(self.identity[None], motion[None])[0]

    def offsets(self, canonical: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
        """δ of each Gaussian: the offset map sampled at its UV. [N, 9]"""
        uv = gaussian_uv(face_idx, bary, self.uvs, self.faces_uv)
        return sample_uv_map(self.offset_map(canonical, faces), uv)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Tensor]:
        """Tensors that rebuild it (:meth:`from_state`): network weights ``net.*``, buffers."""
        out = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        out["meta.width"] = torch.tensor(self.width)
        out["meta.resolution"] = torch.tensor(self.resolution)
        return out

    @classmethod
    def from_state(cls, state: dict[str, Tensor], uvs: np.ndarray, faces_uv: np.ndarray,
                   joint_names: list[str]) -> "SoftBinding":
        """Inverse of :meth:`state` (the UV layout is rebuilt from the head model's UVs)."""
        texels = UVTexels(uvs, faces_uv, int(state["meta.resolution"]))
        sb = cls(texels, state["identity"], state["ref_canonical"], state["uvs"], state["faces_uv"],
                 joint_names, width=int(state["meta.width"]))
        sb.load_state_dict({k: v for k, v in state.items() if not k.startswith("meta.")})
        return sb


def build_soft_binding(head, flame, seq, frames: list[int], device: torch.device, resolution: int = 64,
                       width: int = 16, background=(1.0, 1.0, 1.0)) -> SoftBinding:
    """The soft binding of a subject: picks the reference frame, unwraps its image, rasterises its
    position map and builds the (zero-output) network.

    Args:
        head: the HeadModel; flame: its FlameLayer (on ``device``).
        seq: the tracked Sequence; frames: its training frame indices.
        device: where the model lives.
        resolution: R of the UV maps the network sees.
        width: network width.
        background: colour behind the subject mask of the unwrapped image.
    Returns:
        SoftBinding on ``device``.
    """
    jaw = head.joint_names.index("jaw") if "jaw" in head.joint_names else None
    ref = reference_frame(seq.expr, seq.pose, frames, jaw)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=device)
    texels = UVTexels(head.uvs, head.faces_uv_all, resolution).to(device)
    dense = UVTexels(head.uvs, head.faces_uv_all, max(ZBUFFER_RESOLUTION, resolution)).to(device)
    with torch.no_grad():
        shape = seq.shape[None].to(device)
        expr, pose = seq.expr[ref][None].to(device), seq.pose[ref][None].to(device)
        posed, _ = flame(shape, expr, pose)
        posed = posed[0] + seq.translation[ref].to(device)
        canon, _ = flame(shape, expr, canonical_pose(pose, head.joint_names))
        canon = canon[0]
    image, mask = seq.load_image(ref, background=tuple(background))
    if image.shape[:2] != (seq.height, seq.width):
        image, mask = resize_image(image, seq.width, seq.height), resize_image(mask, seq.width, seq.height)
    colour = unwrap_image(image.to(device), mask.to(device), posed, faces, seq.camera(ref).to(device), texels, dense)
    centre = canon.mean(0)
    extent = (canon - centre).abs().max().clamp_min(1e-6)
    position = texels.rasterize_vertices((canon - centre) / extent, faces)
    identity = torch.cat([colour[:3] * 2 - 1, colour[3:], position], dim=0)
    uvs = torch.as_tensor(head.uvs, dtype=torch.float32, device=device)
    faces_uv = torch.as_tensor(head.faces_uv_all, dtype=torch.long, device=device)
    return SoftBinding(texels, identity, canon, uvs, faces_uv, head.joint_names, width).to(device)


# ---------------------------------------------------------------------- placement
def place_soft(gaussians: UVGaussians, verts: Tensor, faces: Tensor, delta: Tensor | None) -> WorldGaussians:
    """Places the Gaussians with their soft-binding offsets (module table); ``delta=None`` is
    ``gaussians.place`` (hard binding, FATE Eq. 2–4).

    Args:
        gaussians: the UV-bound Gaussians.
        verts: posed vertices, meters. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
        delta: offsets, or None. [N, 9]
    Returns:
        WorldGaussians.
    """
    if delta is None:
        return gaussians.place(verts, faces)
    g = gaussians
    local_rot = quaternion_to_matrix(F.normalize(rotate_quaternion(delta[:, 3:6], g.rotation), dim=-1))
    return place_gaussians(verts, faces, g.face_idx, g.bary, g.colors(), g.opacities(),
                           g.scale_multipliers() * torch.exp(delta[:, 6:9]), local_rot, g.offsets(),
                           position_delta=delta[:, 0:3])


def rotate_quaternion(delta_rot: Tensor, q: Tensor) -> Tensor:
    """(1, δ/2) ⊗ q (Hamilton product, wxyz, not normalised): the soft binding's rotation offset
    applied in the face frame; exactly ``q`` for δ = 0.

    Args:
        delta_rot: δ_r. [N, 3]
        q: wxyz quaternions. [N, 4]
    Returns:
        [N, 4]
    """
    v = 0.5 * delta_rot
    w, x, y, z = q.unbind(-1)
    a, b, c = v.unbind(-1)
    return torch.stack([w - (a * x + b * y + c * z),
                        x + (a * w + b * z - c * y),
                        y + (b * w + c * x - a * z),
                        z + (c * w + a * y - b * x)], dim=-1)


@torch.no_grad()
def fold_static_offsets(gaussians: UVGaussians, delta: Tensor, verts: Tensor, faces: Tensor) -> UVGaussians:
    """The static bake: hard-bound Gaussians with a constant offset δ folded into their raw
    parameters (log scale += δ_s; rotation = q(δ_r) ⊗ r; position: the normal part of
    k_f R_f δ_p into the normal offset, clamped to the shell, the tangential part into the
    barycentric coordinate, which may then leave [0, 1]).

    Scale and rotation fold exactly; the position folds exactly on ``verts`` and approximately on
    other poses (a barycentric shift follows the face's edges, k_f R_f its orthonormal frame).

    Args:
        gaussians: the Gaussians (not modified).
        delta: the offset to fold, e.g. the mean over the training frames. [N, 9]
        verts: the mesh the position is folded on (the canonical rest mesh), meters. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
    Returns:
        a new UVGaussians.
    """
    g = gaussians
    R_f, k_f, n_f = face_frames(verts, faces)
    R_f, k_f, n_f = R_f[g.face_idx], k_f[g.face_idx], n_f[g.face_idx]
    d = k_f[:, None] * (R_f @ delta[:, 0:3, None])[..., 0]
    normal = (d * n_f).sum(-1)
    tangent = d - normal[:, None] * n_f
    tri = verts[faces[g.face_idx]]
    edges = torch.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], dim=-1)  # [N, 3, 2]
    gram = edges.transpose(1, 2) @ edges
    beta = torch.linalg.solve(gram, (edges.transpose(1, 2) @ tangent[..., None]))[..., 0]  # [N, 2]
    bary = g.bary + torch.stack([-beta.sum(-1), beta[:, 0], beta[:, 1]], dim=-1)
    offset_raw = g.offset_raw.detach().clone()
    if g.shell > 0:
        moved = normal != 0
        ratio = ((g.offsets() + normal) / g.shell).clamp(-OFFSET_FOLD_LIMIT, OFFSET_FOLD_LIMIT)
        offset_raw[moved] = torch.atanh(ratio[moved])
    rot = rotate_quaternion(delta[:, 3:6], g.rotation.detach())
    folded = UVGaussians(g.face_idx.clone(), bary, g.sh0.detach().clone(), g.opacity_logit.detach().clone(),
                         g.scale_log.detach() + delta[:, 6:9], rot, offset_raw, shell=g.shell)
    for name in g.extra_names:  # an appearance model's per-Gaussian parameters (HeadGaS features, PBR roughness/F0)
        folded.add_per_gaussian(name, getattr(g, name).detach().clone())
    return folded
