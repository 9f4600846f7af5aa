"""Differentiable pure-PyTorch Gaussian rasteriser (the CPU reference).

It reproduces gsplat 1.5's classic 3DGS rasterisation (``rasterize_mode="classic"``,
pinhole camera) closely enough for the parity test in ``tests/engine/test_raster_cuda.py``,
and runs anywhere torch runs. What it mirrors, read from gsplat's CUDA sources
(``ProjectionEWA3DGSFused.cu``, ``Utils.cuh: persp_proj, add_blur``,
``IntersectTile.cu``, ``RasterizeToPixels3DGSFwd.cu``):

- EWA splatting (Zwicker et al. 2002; 3DGS, Kerbl et al. 2023, eq. 5): the camera-frame
  covariance ``W Σ Wᵀ`` is projected with the pinhole Jacobian, whose ``x/z`` and ``y/z``
  are clamped to the image's field of view widened by ``0.3·tan(fov/2)`` each side
  (the "1.3× FOV" rule); the 2D covariance gets ``eps2d = 0.3`` px² on its diagonal
  (low-pass filter, no antialiasing compensation).
- Culling: camera ``z < near`` or ``z > far``, ``det(Σ2d) <= 0``, opacity ``< 1/255``,
  a box that misses the image.
- Box: gsplat's opacity-aware tight box, ``r_x = ceil(k·sqrt(Σ2d_xx))``,
  ``r_y = ceil(k·sqrt(Σ2d_yy))`` with ``k = min(3.33, sqrt(2·ln(255·opacity)))``; it bounds
  exactly the ellipse where ``alpha >= 1/255``. ``radii`` reports ``max(r_x, r_y)``.
- Per (Gaussian, pixel) pair, pixel centre ``(x + 0.5, y + 0.5)``:
  ``σ = ½(A dx² + C dy²) + B dx dy`` with the conic ``[[A, B], [B, C]] = Σ2d⁻¹`` and
  ``d = mean2d − pixel``; ``alpha = min(0.999, opacity·exp(−σ))``; pairs with
  ``alpha < 1/255`` are skipped (gsplat also skips ``σ < 0``, impossible for the
  positive definite conics that survive culling).
- Front-to-back compositing ordered by the Gaussian's camera ``z`` (ties by index, as
  gsplat's stable radix sort), ``T`` starting at 1; a Gaussian whose ``T·(1 − alpha)``
  would be ``<= 1e-4`` is not composited and ends the pixel (gsplat's exclusive rule).
- Outputs: ``image = Σ wᵢ cᵢ + T_final·background``, ``alpha = 1 − T_final``,
  ``depth = Σ wᵢ zᵢ`` with ``wᵢ = alphaᵢ Tᵢ`` (gsplat ``render_mode="RGB+D"``).

How it stays fast and O(pairs) in memory (no N × H × W tensor): the projection is plain
autograd over N Gaussians. Compositing is one autograd Function. Its forward visits the
Gaussians front to back in chunks; per chunk it enumerates only the pixels inside each
splat's ``alpha >= 1/255`` ellipse (row spans solved from the conic's quadratic, clamped to
the image, so a huge splat costs at most H·W pairs), skips pixels that are already finished
(a summed-area table drops whole splats, a row prefix sum drops row spans), sorts the
pairs by (pixel, depth) with a stable sort on the pixel id, advances the transmittance
with a segmented cumulative sum of ``log(1 − alpha)`` in float64, and keeps exactly the
pairs gsplat would composite (the exclusive stop is a prefix per pixel, because T only
decreases). Its backward is gsplat's analytic one, vectorised: per pair
``∂L/∂alphaᵢ = Tᵢ hᵢ − (Σ_{j behind i} wⱼ hⱼ)/(1 − alphaᵢ)`` with a segmented suffix sum,
then per-Gaussian sums of ``∂L/∂σ·(dx, dy, dx², dx·dy, dy²)`` with ``index_add``. Index
tensors never carry gradients; only the values do. Memory and time are O(visited pairs);
the dense test in ``tests/engine/test_raster.py`` checks images and gradients against an
N × H × W autograd implementation.

Deviations from gsplat (all far below the parity tolerances):

- ``T`` is ``exp`` of a float64 sum of ``log1p(−alpha)`` instead of a float32 running
  product, and the stop test is made on ``log T``: a pair whose ``T·(1 − alpha)`` lies
  within float32 rounding of ``1e-4`` can be kept by one and dropped by the other
  (changing that pixel by about ``1e-4``).
- The ``alpha`` image is ``Σ wᵢ`` (equal to ``1 − Π(1 − alphaᵢ)`` up to rounding).
- gsplat's kernels use fast-math ``__expf``/``__logf``; this uses ``exp``/``log``, and
  evaluates σ along a row as a quadratic in the column offset (float32 rounding differs).
- Gradients equal gsplat's backward (none through a clamped ``alpha`` or an FOV-clamped
  Jacobian entry); the covariance gradient lands on the upper triangle only, as in
  gsplat (the lower triangle of ``covars`` is never read). Double backward is not
  supported.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.geometry.cameras import Camera

logger = logging.getLogger(__name__)

EPS2D = 0.3
"""Low-pass filter added to the 2D covariance diagonal, px² (3DGS / gsplat ``eps2d``)."""
ALPHA_THRESHOLD = 1.0 / 255.0
"""Pairs with a smaller alpha are skipped (gsplat ``ALPHA_THRESHOLD``)."""
ALPHA_MAX = 0.999
"""Per-pair alpha clamp (gsplat ``min(0.999f, ...)``)."""
T_THRESHOLD = 1e-4
"""A pair whose compositing would leave transmittance ``<= T_THRESHOLD`` ends the pixel."""
FAR_PLANE = 1e10
"""gsplat's default far plane, meters."""
MAX_EXTEND = 3.33
"""gsplat's cap on the box half-size in standard deviations."""
FOV_MARGIN = 0.3
"""The Jacobian's x/z, y/z are clamped to the FOV widened by this fraction of tan(fov/2)."""


@dataclass
class Projection:
    """Per-Gaussian screen-space quantities (differentiable where values).

    Attributes:
        means2d: projected centres, pixels, origin at the top-left pixel corner. [N, 2]
        conics: inverse 2D covariance (with ``EPS2D``) as (A, B, C) of ``[[A, B], [B, C]]``,
            px⁻². [N, 3]
        depths: camera-frame z (OpenCV), meters. [N]
        cov2d: 2D covariance with ``EPS2D`` as (xx, xy, yy), px². [N, 3]
        radii_xy: box half-sizes (r_x, r_y), pixels, 0 where culled. [N, 2] int32
        visible: not culled (``radii_xy > 0`` in both axes). [N] bool
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    cov2d: Tensor
    radii_xy: Tensor
    visible: Tensor


def _upper_symmetric(covars: Tensor) -> Tensor:
    """Symmetric matrices from the upper triangle only (gsplat reads ``covars`` this way).

    Args:
        covars: [N, 3, 3]
    Returns:
        [N, 3, 3] with the lower triangle replaced by the transposed upper triangle.
    """
    upper = torch.triu(covars)
    return upper + torch.triu(covars, diagonal=1).transpose(-1, -2)


def project_gaussians(means: Tensor, covars: Tensor, opacities: Tensor, camera: Camera,
                      near: float = 0.01, far: float = FAR_PLANE,
                      eps2d: float = EPS2D) -> Projection:
    """EWA projection of 3D Gaussians to the image plane (gsplat ``persp_proj`` + culling).

    Args:
        means: centres, world frame, meters. [N, 3]
        covars: covariances, world frame, m² (upper triangle read). [N, 3, 3]
        opacities: in [0, 1]. [N]
        camera: OpenCV pinhole camera.
        near: Gaussians with camera z < near are culled, meters.
        far: Gaussians with camera z > far are culled, meters.
        eps2d: added to the 2D covariance diagonal, px².
    Returns:
        :class:`Projection`; values of culled Gaussians are finite but meaningless.
    """
    dtype = means.dtype
    viewmat = camera.viewmat.to(device=means.device, dtype=dtype)
    K = camera.K.to(device=means.device, dtype=dtype)
    W, H = int(camera.width), int(camera.height)
    R = viewmat[:3, :3]
    t = viewmat[:3, 3]
    p = means @ R.T + t  # [N, 3] OpenCV camera frame
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]

    with torch.no_grad():
        z_ok = (z >= near) & (z <= far)
    z_safe = torch.where(z_ok, z, torch.ones_like(z))
    rz = 1.0 / z_safe

    # Jacobian of the pinhole projection with the FOV clamp (3DGS / gsplat).
    tan_fovx = 0.5 * W / fx
    tan_fovy = 0.5 * H / fy
    lim_x_pos = (W - cx) / fx + FOV_MARGIN * tan_fovx
    lim_x_neg = cx / fx + FOV_MARGIN * tan_fovx
    lim_y_pos = (H - cy) / fy + FOV_MARGIN * tan_fovy
    lim_y_neg = cy / fy + FOV_MARGIN * tan_fovy
    tx = z_safe * torch.minimum(torch.maximum(x * rz, -lim_x_neg), lim_x_pos)
    ty = z_safe * torch.minimum(torch.maximum(y * rz, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([
        torch.stack([fx * rz, zero, -fx * tx * rz * rz], -1),
        torch.stack([zero, fy * rz, -fy * ty * rz * rz], -1),
    ], -2)  # [N, 2, 3]
    cov_c = R @ _upper_symmetric(covars) @ R.T  # [N, 3, 3] camera frame
    cov2 = J @ cov_c @ J.transpose(-1, -2)  # [N, 2, 2]
    a = cov2[:, 0, 0] + eps2d
    b = cov2[:, 0, 1]
    c = cov2[:, 1, 1] + eps2d
    det = a * c - b * b
    with torch.no_grad():
        det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)

    with torch.no_grad():
        op = opacities.detach()
        op_ok = op >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(op, min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = torch.clamp(extend, max=MAX_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(torch.clamp(a.detach(), min=0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp(c.detach(), min=0)))
        m = means2d.detach()
        on_screen = ~((m[:, 0] + rx <= 0) | (m[:, 0] - rx >= W)
                      | (m[:, 1] + ry <= 0) | (m[:, 1] - ry >= H))
        ok = z_ok & det_ok & op_ok & on_screen & (rx > 0) & (ry > 0)
        ok &= torch.isfinite(m).all(-1) & torch.isfinite(rx) & torch.isfinite(ry)
        radii_xy = torch.stack([rx, ry], -1).masked_fill(~ok[:, None], 0).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=z,
                      cov2d=torch.stack([a, b, c], -1), radii_xy=radii_xy, visible=ok)


@dataclass
class _Chunk:
    """The composited (Gaussian, pixel) pairs of one front-to-back chunk, sorted by
    (pixel, depth). Nothing here carries gradients.

    Attributes:
        g: Gaussian index. [P] int64
        pix: row-major pixel index ``y·W + x``. [P] int64
        alpha: the pair's alpha (after the 0.999 clamp). [P]
        trans: transmittance in front of the pair. [P]
        seg_id: index of the pair's pixel run within the chunk. [P] int64
        seg_first: index of each run's first pair. [S] int64
    """

    g: Tensor
    pix: Tensor
    alpha: Tensor
    trans: Tensor
    seg_id: Tensor
    seg_first: Tensor


def _segments(pix_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """Runs of equal pixel ids in a sorted array.

    Args:
        pix_sorted: [P] int64, sorted.
    Returns:
        seg_id [P] int64 (run index of each element), seg_first [S] int64 (first element
        of each run).
    """
    start = torch.ones_like(pix_sorted, dtype=torch.bool)
    if pix_sorted.numel() > 1:
        torch.ne(pix_sorted[1:], pix_sorted[:-1], out=start[1:])
    seg_id = torch.cumsum(start, 0, dtype=torch.int64).sub_(1)
    return seg_id, torch.nonzero(start).squeeze(1)


def _segmented_cumsum(values: Tensor, seg_id: Tensor, seg_first: Tensor,
                      inclusive: bool) -> Tensor:
    """Cumulative sum restarting at every segment (segments are contiguous runs).

    Args:
        values: [P] (float64: the running sum over all segments must not lose precision)
        seg_id: segment of each element, non-decreasing. [P] int64
        seg_first: first element of each segment. [S] int64
        inclusive: include the element itself.
    Returns:
        [P] sums over the element's segment up to it.
    """
    if values.numel() == 0:
        return values.clone()
    out = torch.cumsum(values, 0)
    if not inclusive:
        out.sub_(values)
        base = out.index_select(0, seg_first)
    else:
        base = out.index_select(0, seg_first).sub_(values.index_select(0, seg_first))
    return out.sub_(base.index_select(0, seg_id))


def _repeat_ranges(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For each i, ``counts[i]`` consecutive entries: (owner i, offset 0..counts[i]-1).

    Args:
        counts: [R] int64, >= 0
    Returns:
        owner [P] int64 and offset [P] int64, P = counts.sum().
    """
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first = torch.cumsum(counts, 0).sub_(counts)
    offset = torch.arange(owner.numel(), device=counts.device).sub_(first.index_select(0, owner))
    return owner, offset


@torch.no_grad()
def _select_pairs(table: Tensor, order: Tensor, radii_xy: Tensor, width: int, height: int,
                  chunk_pairs: int) -> list[_Chunk]:
    """Finds the pairs gsplat composites and their alpha and transmittance (no autograd).

    Gaussians are visited front to back in chunks (``chunk_pairs`` box pairs first, then
    1.5× more each time); within a chunk only the pixels of each splat's
    ``alpha >= 1/255`` ellipse are enumerated, finished pixels are skipped, and the
    transmittance is advanced with a segmented cumulative sum of ``log(1 − alpha)`` over
    the pairs sorted by (pixel, depth).

    Args:
        table: per Gaussian (mean_x, mean_y, A, B, C, opacity), px / px⁻². [N, 6]
        order: visible Gaussians sorted front to back (stable by camera z). [M] int64
        radii_xy: box half-sizes, pixels. [N, 2] int32
        width, height: image size, pixels.
        chunk_pairs: box pairs visited by the first chunk.
    Returns:
        the chunks, front to back, each a :class:`_Chunk`.
    """
    device, dtype = table.device, table.dtype
    W, H = width, height
    t64 = table.to(torch.float64)
    mx, my, A, B, C, op = t64.unbind(-1)
    r = radii_xy.to(torch.float64)
    # Rows / columns whose pixel centre lies in the box, clamped to the image.
    row_lo = torch.ceil(my - r[:, 1] - 0.5).clamp(0, H - 1).to(torch.int64)
    row_hi = torch.floor(my + r[:, 1] - 0.5).clamp(-1, H - 1).to(torch.int64)
    col_lo = torch.ceil(mx - r[:, 0] - 0.5).clamp(0, W - 1).to(torch.int64)
    col_hi = torch.floor(mx + r[:, 0] - 0.5).clamp(-1, W - 1).to(torch.int64)
    n_rows = (row_hi - row_lo + 1).clamp(min=0)
    # σ level where alpha = 1/255: the ellipse the box bounds.
    level = torch.log(torch.clamp(op, min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)
    log_op = torch.log(torch.clamp(op, min=1e-30))
    log_t_min = math.log(T_THRESHOLD)

    est = (n_rows * (col_hi - col_lo + 1).clamp(min=0)).index_select(0, order)
    cum = torch.cumsum(est, 0)

    done = torch.zeros(H * W, dtype=torch.bool, device=device)
    log_t = torch.zeros(H * W, dtype=torch.float64, device=device)
    any_done = False
    chunks: list[_Chunk] = []
    start, consumed, budget = 0, 0, max(int(chunk_pairs), 1)
    while start < order.numel():
        stop = max(int(torch.searchsorted(cum, consumed + budget, right=True)), start + 1)
        consumed = int(cum[stop - 1])
        budget = budget * 3 // 2
        gc = order[start:stop]
        start = stop

        if any_done:
            # Drop splats whose box holds no open pixel (summed-area table).
            open_px = (~done).view(H, W).to(torch.int32)
            sat = torch.zeros(H + 1, W + 1, dtype=torch.int32, device=device)
            sat[1:, 1:] = open_px.cumsum(0).cumsum(1)
            sat = sat.view(-1)
            y0, x0 = row_lo.index_select(0, gc), col_lo.index_select(0, gc)
            y1 = (row_hi.index_select(0, gc) + 1).clamp_(min=0)
            x1 = (col_hi.index_select(0, gc) + 1).clamp_(min=0)
            y0w, y1w = y0 * (W + 1), y1 * (W + 1)
            cnt = (sat.index_select(0, y1w + x1) - sat.index_select(0, y0w + x1)
                   - sat.index_select(0, y1w + x0) + sat.index_select(0, y0w + x0))
            gc = gc[(cnt > 0) & (y1 > y0) & (x1 > x0)]
            row_prefix = torch.zeros(H, W + 1, dtype=torch.int32, device=device)
            row_prefix[:, 1:] = open_px.cumsum(1)
            row_prefix = row_prefix.view(-1)
        if gc.numel() == 0:
            continue

        # Level 1: (Gaussian, row) pairs and the ellipse's column span on each row.
        owner, offset = _repeat_ranges(n_rows.index_select(0, gc))
        rg = gc.index_select(0, owner)
        row = row_lo.index_select(0, rg).add_(offset)
        a_, b_, c_ = A.index_select(0, rg), B.index_select(0, rg), C.index_select(0, rg)
        mx_r = mx.index_select(0, rg)
        dy = my.index_select(0, rg) - (row.to(torch.float64) + 0.5)  # mean − pixel centre
        # σ(u) = ½A u² + B u dy + ½C dy² <= level, u = mean_x − pixel_x
        disc = b_ * b_ * dy * dy - a_ * (c_ * dy * dy - 2.0 * level.index_select(0, rg))
        sq = torch.sqrt(torch.clamp(disc, min=0.0))
        margin = 1e-3  # px of slack; the exact alpha test below removes the extra pairs
        j0 = torch.ceil(mx_r - (sq - b_ * dy) / a_ - (0.5 + margin)).to(torch.int64)
        j1 = torch.floor(mx_r + (sq + b_ * dy) / a_ - (0.5 - margin)).to(torch.int64)
        j0 = torch.maximum(j0, col_lo.index_select(0, rg))
        j1 = torch.minimum(j1, col_hi.index_select(0, rg))
        nc = (j1 - j0 + 1).clamp_(min=0) * (disc >= 0)
        if any_done:
            base = row * (W + 1)
            open_cnt = (row_prefix.index_select(0, base + (j1 + 1).clamp(0, W))
                        - row_prefix.index_select(0, base + j0.clamp(0, W)))
            nc = nc * (open_cnt > 0)
        keep_rows = torch.nonzero(nc).squeeze(1)
        rg, row, j0, nc = (x.index_select(0, keep_rows) for x in (rg, row, j0, nc))
        a_, b_, c_, dy, mx_r = (x.index_select(0, keep_rows) for x in (a_, b_, c_, dy, mx_r))
        # σ − log(opacity) as a quadratic in the column offset t from j0 (float64 per row).
        dx0 = mx_r - (j0.to(torch.float64) + 0.5)  # dx = dx0 − t
        q2 = (0.5 * a_).to(dtype)
        q1 = (-(a_ * dx0 + b_ * dy)).to(dtype)
        q0 = (0.5 * a_ * dx0 * dx0 + b_ * dx0 * dy + 0.5 * c_ * dy * dy
              - log_op.index_select(0, rg)).to(dtype)
        pix_base = row.mul_(W).add_(j0)

        # Level 2: (Gaussian, pixel) pairs, in depth order.
        owner, t = _repeat_ranges(nc)
        tf = t.to(dtype)
        alpha = q2.index_select(0, owner).mul_(tf).add_(q1.index_select(0, owner)).mul_(tf)
        alpha = alpha.add_(q0.index_select(0, owner)).neg_().exp_().clamp_(max=ALPHA_MAX)
        pix = pix_base.index_select(0, owner).add_(t)
        ok = alpha >= ALPHA_THRESHOLD
        if any_done:
            ok &= ~done.index_select(0, pix)
        if not bool(ok.all()):
            sel = torch.nonzero(ok).squeeze(1)
            owner, pix, alpha = (x.index_select(0, sel) for x in (owner, pix, alpha))
        if pix.numel() == 0:
            continue
        g = rg.index_select(0, owner)

        # Stable sort by pixel → (pixel, depth); transmittance by segmented log-sum.
        pix32, perm = torch.sort(pix.to(torch.int32), stable=True)
        pix = pix32.to(torch.int64)
        g, alpha = g.index_select(0, perm), alpha.index_select(0, perm)
        seg_id, seg_first = _segments(pix)
        log1m = alpha.to(torch.float64, copy=True).neg_().log1p_()
        log_before = _segmented_cumsum(log1m, seg_id, seg_first, inclusive=False)
        log_before.add_(log_t.index_select(0, pix))
        keep = (log_before + log1m) > log_t_min
        if not bool(keep.all()):
            # gsplat's exclusive rule: the pixel ends before this pair (a prefix per pixel).
            done.index_fill_(0, pix[~keep], True)
            any_done = True
            kept = torch.nonzero(keep).squeeze(1)
            pix, g, alpha, log1m, log_before = (
                x.index_select(0, kept) for x in (pix, g, alpha, log1m, log_before))
            seg_id, seg_first = _segments(pix)
        log_t.index_add_(0, pix, log1m)
        chunks.append(_Chunk(g=g, pix=pix, alpha=alpha, trans=log_before.exp_().to(dtype),
                             seg_id=seg_id, seg_first=seg_first))
        if any_done and bool(done.all()):
            break
    return chunks


class _Composite(torch.autograd.Function):
    """Front-to-back alpha compositing of the selected pairs with an analytic backward.

    Forward: ``out[pix] = Σ wᵢ [fᵢ, 1]`` with ``wᵢ = alphaᵢ Tᵢ`` (3DGS eq. 3). Backward
    (as gsplat's ``rasterize_to_pixels`` backward), with ``hᵢ = ∂L/∂out[pix]·[fᵢ, 1]``:
    ``∂L/∂alphaᵢ = Tᵢ hᵢ − (Σ_{j behind i} wⱼ hⱼ) / (1 − alphaᵢ)``, then through
    ``alpha = min(0.999, o·exp(−σ))`` (no gradient where clamped) to the means, conics and
    opacities; ``∂L/∂fᵢ = Σ wᵢ ∂L/∂out[pix]``.
    """

    @staticmethod
    def forward(ctx, table: Tensor, feats: Tensor, order: Tensor, radii_xy: Tensor,
                width: int, height: int, chunk_pairs: int) -> Tensor:
        """Args: table [N, 6] (mean_x, mean_y, A, B, C, opacity); feats [N, F];
        order [M] int64; radii_xy [N, 2] int32. Returns out [F + 1, H·W]."""
        chunks = _select_pairs(table.detach(), order, radii_xy, width, height, chunk_pairs)
        F = feats.shape[1]
        feats_rows = feats.detach().T.contiguous()  # [F, N]
        out = torch.zeros(F + 1, width * height, dtype=table.dtype, device=table.device)
        for c in chunks:
            w = c.alpha * c.trans
            src = torch.empty(F + 1, w.numel(), dtype=table.dtype, device=table.device)
            torch.mul(feats_rows.index_select(1, c.g), w, out=src[:F])
            src[F] = w
            out.index_add_(1, c.pix, src)
        ctx.save_for_backward(table.detach(), feats.detach())
        ctx.chunks = chunks
        ctx.size = (width, height)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        table, feats = ctx.saved_tensors
        width, height = ctx.size
        F = feats.shape[1]
        N = table.shape[0]
        dtype, device = table.dtype, table.device
        n_mom = 6 + F if ctx.needs_input_grad[1] else 6
        # Per-pixel rows (∂L/∂out, pixel centre) and per-Gaussian rows (features, mean).
        xs = torch.arange(width, dtype=dtype, device=device) + 0.5
        ys = torch.arange(height, dtype=dtype, device=device) + 0.5
        pix_rows = torch.cat([grad_out, xs.repeat(height)[None],
                              ys.repeat_interleave(width)[None]], 0)  # [F + 3, H·W]
        gauss_rows = torch.cat([feats.T, table[:, :2].T], 0)  # [F + 2, N]
        sums = torch.zeros(n_mom, N, dtype=dtype, device=device)
        behind_later = torch.zeros(width * height, dtype=torch.float64, device=device)
        for c in reversed(ctx.chunks):  # back to front: Σ w·h behind each pair
            gp = pix_rows.index_select(1, c.pix)  # [F + 3, P]
            gg = gauss_rows.index_select(1, c.g)  # [F + 2, P]
            w = c.alpha * c.trans
            h = (gp[:F] * gg[:F]).sum(0).add_(gp[F])  # ∂L/∂out · [f, 1]
            wh = (w * h).to(torch.float64)
            incl = _segmented_cumsum(wh, c.seg_id, c.seg_first, inclusive=True)
            total = torch.zeros_like(behind_later).index_add_(0, c.pix, wh)
            behind_later += total  # now: this chunk and all later ones
            behind = behind_later.index_select(0, c.pix).sub_(incl).to(dtype)
            g_alpha = c.trans * h - behind / (1.0 - c.alpha)
            g_alpha.mul_(c.alpha < ALPHA_MAX)  # clamped alpha: no gradient

            # σ = ½A dx² + B dx dy + ½C dy², d = mean − pixel: per-Gaussian sums of
            # ∂L/∂σ·(dx, dy, dx², dx·dy, dy²) and ∂L/∂alpha·alpha (chain rule below).
            dx = gg[F] - gp[F + 1]
            dy = gg[F + 1] - gp[F + 2]
            g_sigma = -c.alpha * g_alpha
            mom = torch.empty(n_mom, w.numel(), dtype=dtype, device=device)
            torch.mul(g_sigma, dx, out=mom[0])
            torch.mul(g_sigma, dy, out=mom[1])
            torch.mul(mom[0], dx, out=mom[2])
            torch.mul(mom[0], dy, out=mom[3])
            torch.mul(mom[1], dy, out=mom[4])
            torch.mul(g_alpha, c.alpha, out=mom[5])
            if n_mom > 6:
                torch.mul(gp[:F], w, out=mom[6:])
            sums.index_add_(1, c.g, mom)
        _, _, A, B, C, op = table.unbind(-1)
        grad_table = torch.stack([
            A * sums[0] + B * sums[1],  # ∂σ/∂mean_x = A dx + B dy
            B * sums[0] + C * sums[1],  # ∂σ/∂mean_y = B dx + C dy
            0.5 * sums[2],  # ∂σ/∂A = ½dx²
            sums[3],  # ∂σ/∂B = dx dy
            0.5 * sums[4],  # ∂σ/∂C = ½dy²
            sums[5] / op.clamp(min=ALPHA_THRESHOLD),  # ∂alpha/∂o = alpha / o
        ], -1)
        grad_feats = sums[6:].T if n_mom > 6 else None
        return grad_table, grad_feats, None, None, None, None, None


def rasterize_torch(means: Tensor, covars: Tensor, opacities: Tensor, colors: Tensor,
                    camera: Camera, background: Tensor | None = None, near: float = 0.01,
                    chunk_pairs: int | None = None):
    """Renders 3D Gaussians with the pure-PyTorch reference (differentiable).

    Args:
        means: centres, world frame, meters. [N, 3]
        covars: covariances, world frame, m² (symmetric PSD; upper triangle read). [N, 3, 3]
        opacities: in [0, 1]. [N]
        colors: per-Gaussian colour. [N, 3]
        camera: OpenCV pinhole camera (``viewmat`` world→camera, ``K`` in pixels).
        background: colour behind the splats. [3]; None = black.
        near: near plane, meters (camera z < near is culled).
        chunk_pairs: box pairs visited by the first front-to-back chunk (later ones grow
            1.5×); default ``8·W·H``. Only speed depends on it.
    Returns:
        :class:`engine.raster.RenderOutput` (image [H, W, 3], alpha [H, W, 1],
        depth [H, W, 1] alpha-weighted camera z in meters, radii [N] int32).
    """
    from engine.raster import RenderOutput  # local: the package imports this module

    W, H = int(camera.width), int(camera.height)
    dtype = means.dtype
    proj = project_gaussians(means, covars, opacities, camera, near=near)
    table = torch.cat([proj.means2d, proj.conics, opacities.to(dtype)[:, None]], -1)  # [N, 6]
    feats = torch.cat([colors.to(dtype), proj.depths[:, None]], -1)  # [N, 4]
    with torch.no_grad():
        vis_idx = torch.nonzero(proj.visible).squeeze(1)
        order = vis_idx[torch.sort(proj.depths.detach()[vis_idx], stable=True).indices]
    out = _Composite.apply(table, feats, order, proj.radii_xy, W, H,
                           chunk_pairs if chunk_pairs is not None else 8 * W * H)
    out = out.T.reshape(H, W, 5)
    alpha = out[..., 4:5]
    image = out[..., :3]
    if background is not None:
        image = image + (1.0 - alpha) * background.to(dtype=dtype, device=means.device)
    return RenderOutput(image=image, alpha=alpha, depth=out[..., 3:4],
                        radii=proj.radii_xy.max(-1).values, means2d=proj.means2d)


def make_benchmark_scene(n: int, res: int, seed: int = 0, device: str | torch.device = "cpu",
                         sigma_px: tuple[float, float] = (1.0, 4.0)):
    """Random Gaussians filling the view of a square camera (for benchmarks and tests).

    Args:
        n: number of Gaussians.
        res: image width = height, pixels.
        seed: RNG seed.
        device: torch device.
        sigma_px: range of the splats' standard deviations in pixels (log-uniform).
    Returns:
        (means [n, 3] m, quats [n, 4] wxyz (unnormalised), log_scales [n, 3] log m,
        opacities [n], colors [n, 3], camera) — camera at the origin looking down +z,
        fy = fx = res, Gaussians at z in [1.8, 2.2] m covering the image.
    """
    gen = torch.Generator().manual_seed(seed)
    f = float(res)
    z = 1.8 + 0.4 * torch.rand(n, generator=gen)
    uv = (torch.rand(n, 2, generator=gen) * 1.1 - 0.55) * res  # px from the image centre
    xy = uv * z[:, None] / f
    means = torch.cat([xy, z[:, None]], -1)
    lo, hi = math.log(sigma_px[0]), math.log(sigma_px[1])
    s_px = torch.exp(lo + (hi - lo) * torch.rand(n, 3, generator=gen))
    log_scales = torch.log(s_px * z[:, None] / f)
    quats = torch.randn(n, 4, generator=gen)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=gen)
    colors = torch.rand(n, 3, generator=gen)
    K = torch.tensor([[f, 0.0, res / 2], [0.0, f, res / 2], [0.0, 0.0, 1.0]])
    camera = Camera(viewmat=torch.eye(4), K=K, width=res, height=res).to(device)
    return (means.to(device), quats.to(device), log_scales.to(device),
            opacities.to(device), colors.to(device), camera)


def _quat_to_rotmat(q: Tensor) -> Tensor:
    """Unit-normalised wxyz quaternions → rotation matrices. [N, 4] → [N, 3, 3]"""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(-1, 3, 3)


def benchmark(n: int = 20_000, res: int = 128, iters: int = 10, threads: int | None = None,
              seed: int = 0) -> float:
    """Forward + backward speed of the CPU reference on a random scene.

    Args:
        n: number of Gaussians (σ 1–4 px, opacity 0.05–0.95, covering the image).
        res: square image size, pixels.
        iters: timed iterations (after one warm-up).
        threads: ``torch.set_num_threads`` for the run (restored after); None = unchanged.
        seed: scene seed.
    Returns:
        iterations per second (forward + backward of ``image.sum() + depth.sum()``).
    """
    from engine.raster import covariance_from_rotation_scale

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        means, quats, log_scales, opacities, colors, camera = make_benchmark_scene(n, res, seed)
        params = [t.requires_grad_(True) for t in (means, quats, log_scales, opacities, colors)]

        def step() -> None:
            covars = covariance_from_rotation_scale(_quat_to_rotmat(quats), torch.exp(log_scales))
            out = rasterize_torch(means, covars, opacities, colors, camera)
            (out.image.sum() + out.depth.sum()).backward()
            for p in params:
                p.grad = None

        step()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        dt = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
    rate = iters / dt
    logger.info("torch_ref benchmark: N=%d res=%d: %.1f it/s (%.1f ms/it)", n, res, rate,
                1e3 / rate)
    return rate
