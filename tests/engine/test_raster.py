"""CPU tests of the Gaussian rasteriser (engine/raster): the pure-PyTorch reference against
a brute-force dense implementation written here, conventions, culling, background."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import ConfigError, FateError
from engine.geometry.cameras import Camera, look_at_opencv
from engine.raster import (
    RenderOutput,
    available_backends,
    covariance_from_rotation_scale,
    default_backend,
    rasterize,
)
from engine.raster.torch_ref import benchmark, make_benchmark_scene, rasterize_torch

# ----------------------------------------------------------------------------- helpers

def _camera(width: int, height: int, f: float, viewmat: torch.Tensor | None = None,
            dtype: torch.dtype = torch.float32) -> Camera:
    """Pinhole camera with a centred principal point; identity pose unless given."""
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    vm = torch.eye(4, dtype=dtype) if viewmat is None else viewmat.to(dtype)
    return Camera(viewmat=vm, K=K, width=width, height=height)


def _quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions (normalised here) → rotation matrices. [N, 4] → [N, 3, 3]"""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(-1, 3, 3)


def dense_render(means, covars, opacities, colors, camera, background=None, near=0.01):
    """Brute force over all N × H × W (Gaussian, pixel) pairs, written independently of
    engine/raster from the 3DGS / gsplat rules (EWA with FOV-clamped Jacobian, eps2d 0.3,
    alpha = min(0.999, o·exp(−σ)) skipped below 1/255, depth-sorted, a pixel ends before
    the Gaussian that would bring T to <= 1e-4)."""
    dtype = means.dtype
    vm, K = camera.viewmat.to(dtype), camera.K.to(dtype)
    W, H = camera.width, camera.height
    cam = means @ vm[:3, :3].T + vm[:3, 3]
    keep = cam[:, 2] >= near
    cam, opacities, colors = cam[keep], opacities[keep], colors[keep]
    cov = torch.triu(covars[keep])
    cov = cov + torch.triu(cov, 1).transpose(1, 2)  # gsplat reads the upper triangle
    x, y, z = cam.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_xp = (W - cx) / fx + 0.3 * (0.5 * W / fx)
    lim_xn = cx / fx + 0.3 * (0.5 * W / fx)
    lim_yp = (H - cy) / fy + 0.3 * (0.5 * H / fy)
    lim_yn = cy / fy + 0.3 * (0.5 * H / fy)
    xz = torch.clamp(x / z, min=-lim_xn, max=lim_xp)
    yz = torch.clamp(y / z, min=-lim_yn, max=lim_yp)
    J = torch.zeros(len(z), 2, 3, dtype=dtype)
    J[:, 0, 0] = fx / z
    J[:, 0, 2] = -fx * xz / z
    J[:, 1, 1] = fy / z
    J[:, 1, 2] = -fy * yz / z
    Rw = vm[:3, :3]
    cov2d = J @ (Rw @ cov @ Rw.T) @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=dtype)
    conic = torch.linalg.inv(cov2d)
    mean2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype) + 0.5,
                            torch.arange(W, dtype=dtype) + 0.5, indexing="ij")
    d = mean2d[:, None, None, :] - torch.stack([xs, ys], -1)[None]  # [N, H, W, 2]
    sigma = 0.5 * torch.einsum("nhwi,nij,nhwj->nhw", d, conic, d)
    alpha = torch.clamp(opacities[:, None, None] * torch.exp(-sigma), max=0.999)
    alpha = torch.where(alpha >= 1.0 / 255.0, alpha, torch.zeros_like(alpha))
    order = torch.sort(z.detach(), stable=True).indices
    alpha, colors, z = alpha[order], colors[order], z[order]
    t_after = torch.cumprod(1.0 - alpha, 0)
    alpha = alpha * (t_after > 1e-4)  # monotone: a prefix per pixel
    t_before = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1.0 - alpha[:-1]]), 0)
    w = alpha * t_before  # [N, H, W]
    acc = w.sum(0)[..., None]
    image = torch.einsum("nhw,nc->hwc", w, colors)
    if background is not None:
        image = image + (1.0 - acc) * background
    depth = torch.einsum("nhw,n->hw", w, z)[..., None]
    return image, acc, depth


def _random_scene(n: int, res: int, seed: int, dtype=torch.float64):
    """~n Gaussians in front of a res×res camera: varied sizes (0.4–8 px), stacks that
    saturate T, a few beyond the image edges (FOV clamp), one behind the camera."""
    gen = torch.Generator().manual_seed(seed)
    f = 1.2 * res
    z = 1.5 + torch.rand(n, generator=gen, dtype=dtype)
    uv = (torch.rand(n, 2, generator=gen, dtype=dtype) * 1.6 - 0.8) * res
    uv[: n // 5] *= 0.15  # a crowded centre: T reaches 1e-4 there
    means = torch.cat([uv * z[:, None] / f, z[:, None]], -1)
    means[-1, 2] = -1.0  # behind the camera
    s_px = torch.exp(math.log(0.4) + math.log(20.0) * torch.rand(n, 3, generator=gen, dtype=dtype))
    R = _quat_to_rotmat(torch.randn(n, 4, generator=gen, dtype=dtype))
    covars = covariance_from_rotation_scale(R, s_px * z[:, None] / f)
    opacities = 0.1 + 0.89 * torch.rand(n, generator=gen, dtype=dtype)
    opacities[: n // 5] = 0.97
    colors = torch.rand(n, 3, generator=gen, dtype=dtype)
    return means, covars, opacities, colors, _camera(res, res, f, dtype=dtype)


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("chunk_pairs", [None, 50])  # one chunk, many chunks (skipping)
def test_reference_matches_dense_image(chunk_pairs):
    means, covars, opac, colors, cam = _random_scene(50, 32, seed=0, dtype=torch.float32)
    bg = torch.tensor([0.1, 0.2, 0.3])
    out = rasterize_torch(means, covars, opac, colors, cam, background=bg, chunk_pairs=chunk_pairs)
    image, acc, depth = dense_render(means, covars, opac, colors, cam, background=bg)
    assert acc.max() > 1 - 2e-4, "scene must saturate some pixels (T threshold exercised)"
    # float32; the two sum the same terms in different orders: worst seen ~1e-6
    torch.testing.assert_close(out.image, image, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.alpha, acc, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.depth, depth, rtol=0, atol=1e-5 * 3)  # z ≈ 2 m scale


@pytest.mark.parametrize("chunk_pairs", [None, 50])
def test_reference_gradients_match_dense(chunk_pairs):
    means, covars, opac, colors, cam = _random_scene(50, 32, seed=1)  # float64
    bg = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    wi = torch.rand(32, 32, 3, generator=gen, dtype=torch.float64)
    wa = torch.rand(32, 32, 1, generator=gen, dtype=torch.float64)
    wd = torch.rand(32, 32, 1, generator=gen, dtype=torch.float64)

    def grads(render):
        params = [t.clone().requires_grad_(True) for t in (means, covars, opac, colors)]
        image, acc, depth = render(*params)
        loss = (image * wi).sum() + (acc * wa).sum() + (depth * wd).sum()
        return torch.autograd.grad(loss, params)

    g_ref = grads(lambda m, c, o, col: (lambda r: (r.image, r.alpha, r.depth))(
        rasterize_torch(m, c, o, col, cam, background=bg, chunk_pairs=chunk_pairs)))
    g_dense = grads(lambda m, c, o, col: dense_render(m, c, o, col, cam, background=bg))
    for name, a, b in zip(["means", "covars", "opacities", "colors"], g_ref, g_dense):
        assert torch.isfinite(a).all(), name
        assert b.abs().max() > 0, name
        # float64, same maths (analytic backward vs autograd of the dense one); worst seen 5e-14
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()), msg=name)


def test_reference_gradients_float32():
    # float32 reference vs float64 dense: same gradients up to float32 rounding
    means, covars, opac, colors, cam = _random_scene(50, 32, seed=4)
    gen = torch.Generator().manual_seed(5)
    wi = torch.rand(32, 32, 3, generator=gen, dtype=torch.float64)
    cam32 = Camera(cam.viewmat.float(), cam.K.float(), cam.width, cam.height)

    def grads(render, dtype):
        params = [t.to(dtype).requires_grad_(True) for t in (means, covars, opac, colors)]
        loss = (render(*params) * wi.to(dtype)).sum()
        return torch.autograd.grad(loss, params)

    g32 = grads(lambda m, c, o, col: rasterize_torch(m, c, o, col, cam32).image, torch.float32)
    g64 = grads(lambda m, c, o, col: dense_render(m, c, o, col, cam)[0], torch.float64)
    for name, a, b in zip(["means", "covars", "opacities", "colors"], g32, g64):
        # float32 vs float64: worst seen 1.4e-6 of the largest entry
        torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-5 * float(b.abs().max()),
                                   msg=name)


def test_single_gaussian_peak_opencv_convention():
    cam = _camera(64, 48, f=100.0)  # cx = 32, cy = 24
    z = 2.0
    u, v = 44.5, 37.5  # right of and below the principal point: +x right, +y down
    means = torch.tensor([[(u - 32) * z / 100.0, (v - 24) * z / 100.0, z]])
    covars = (0.03 ** 2 * torch.eye(3))[None]  # σ = 1.5 px
    opac = torch.tensor([0.7])
    color = torch.tensor([[0.2, 0.4, 0.8]])
    out = rasterize(means, covars, opac, color, cam, backend="torch")
    assert isinstance(out, RenderOutput)
    assert out.image.shape == (48, 64, 3) and out.alpha.shape == (48, 64, 1)
    assert out.depth.shape == (48, 64, 1) and out.radii.shape == (1,)
    row, col = divmod(int(out.alpha[..., 0].argmax()), 64)
    assert (row, col) == (37, 44)
    # pixel centre (44.5, 37.5) is the projected mean: σ = 0, alpha = opacity (float32)
    torch.testing.assert_close(out.alpha[37, 44, 0], torch.tensor(0.7), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.image[37, 44], 0.7 * color[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.depth[37, 44, 0] / out.alpha[37, 44, 0], torch.tensor(z),
                               rtol=1e-6, atol=0)
    # radius: gsplat's opacity-aware box, ceil(sqrt(2 ln(255·o)) · sqrt(σ_px² + 0.3))
    k = math.sqrt(2 * math.log(255 * 0.7))
    assert int(out.radii[0]) == math.ceil(k * math.sqrt(1.5 ** 2 + 0.3))
    # symmetric falloff: one pixel left/right/up/down are equal
    a = out.alpha[..., 0]
    torch.testing.assert_close(a[37, 43], a[37, 45], rtol=1e-5, atol=0)  # float32 rounding
    torch.testing.assert_close(a[36, 44], a[38, 44], rtol=1e-5, atol=0)


def test_world_to_camera_and_up_direction():
    # Camera 2 m from the origin on world +z, looking at it with world +y up: OpenGL's
    # default view, so world +x is to the right and world +y is up in the image.
    vm = torch.tensor(look_at_opencv(np.array([0.0, 0.0, 2.0]), np.zeros(3)), dtype=torch.float32)
    cam = _camera(32, 32, f=40.0, viewmat=vm)  # cx = cy = 16; 1 cm at 2 m = 0.2 px
    means = torch.tensor([[0.025, 0.325, 0.0],    # up:    (u, v) = (16.5, 9.5)
                          [0.325, -0.025, 0.0]])  # right: (u, v) = (22.5, 16.5)
    covars = (0.02 ** 2 * torch.eye(3)).expand(2, 3, 3)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = rasterize(means, covars, torch.tensor([0.9, 0.9]), colors, cam, backend="torch")
    assert divmod(int(out.image[..., 0].argmax()), 32) == (9, 16)
    assert divmod(int(out.image[..., 1].argmax()), 32) == (16, 22)
    # camera z of both is 2 m: expected depth = depth / alpha
    torch.testing.assert_close(out.depth[9, 16, 0] / out.alpha[9, 16, 0], torch.tensor(2.0),
                               rtol=1e-6, atol=0)  # float32


def test_culled_behind_and_before_near_plane():
    cam = _camera(24, 24, f=30.0)
    means = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.005], [5.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
                         requires_grad=True)
    covars = (0.05 ** 2 * torch.eye(3)).expand(4, 3, 3).clone().requires_grad_(True)
    opac = torch.tensor([0.9, 0.9, 0.9, 0.9], requires_grad=True)
    colors = torch.ones(4, 3, requires_grad=True)
    bg = torch.tensor([0.5, 0.25, 0.125])
    out = rasterize(means, covars, opac, colors, cam, background=bg, backend="torch", near=0.01)
    # behind, closer than near, far off-screen: culled; the last one is visible
    assert out.radii.tolist()[:3] == [0, 0, 0] and int(out.radii[3]) > 0
    (out.image.sum() + out.depth.sum()).backward()
    for t in (means, covars, opac, colors):
        assert torch.isfinite(t.grad).all()
    assert torch.all(means.grad[:3] == 0) and torch.all(opac.grad[:3] == 0)
    assert means.grad[3].abs().sum() > 0
    # only-culled scene: background everywhere, zero alpha and depth
    out = rasterize(means[:3].detach(), covars[:3].detach(), opac[:3].detach(),
                    colors[:3].detach(), cam, background=bg, backend="torch")
    assert torch.equal(out.alpha, torch.zeros(24, 24, 1))
    assert torch.equal(out.depth, torch.zeros(24, 24, 1))
    assert torch.equal(out.image, bg.expand(24, 24, 3))


def test_background_compositing():
    means, covars, opac, colors, cam = _random_scene(6, 32, seed=3, dtype=torch.float32)
    bg = torch.tensor([0.2, 0.5, 0.9])
    black = rasterize(means, covars, opac, colors, cam, backend="torch")
    lit = rasterize(means, covars, opac, colors, cam, background=bg, backend="torch")
    # image = Σ w c + (1 − alpha) · background; float32
    torch.testing.assert_close(lit.image, black.image + (1 - black.alpha) * bg, rtol=0, atol=1e-6)
    torch.testing.assert_close(lit.alpha, black.alpha, rtol=0, atol=0)
    empty = black.alpha[..., 0] == 0
    assert empty.any() and (~empty).any()
    assert torch.equal(lit.image[empty], bg.expand(int(empty.sum()), 3))


def test_transmittance_stop_is_exclusive():
    # Stacks on one pixel centre, front to back. gsplat skips the Gaussian that would take
    # T to <= 1e-4 and ends the pixel there.
    cam = _camera(9, 9, f=10.0)

    def stack(opacities):
        n = len(opacities)
        z = torch.linspace(1.0, 2.0, n)
        means = torch.stack([torch.zeros(n), torch.zeros(n), z], -1)  # all at pixel (4, 4)
        covars = (0.1 ** 2 * torch.eye(3)).expand(n, 3, 3)
        colors = torch.eye(3).repeat(2, 1)[:n]
        out = rasterize(means, covars, torch.tensor(opacities), colors, cam, backend="torch")
        return out, colors

    out, colors = stack([0.95] * 4)  # T: 0.05, 2.5e-3, 1.25e-4 (kept), 6.25e-6 (stopped)
    expect = sum(0.95 * 0.05 ** i * colors[i] for i in range(3))
    torch.testing.assert_close(out.image[4, 4], expect, rtol=0, atol=1e-6)  # float32
    torch.testing.assert_close(out.alpha[4, 4, 0], torch.tensor(1 - 0.05 ** 3), rtol=0, atol=1e-6)
    out, colors = stack([0.995, 0.5, 0.5])  # T: 5e-3, 2.5e-3, 1.25e-3: all kept
    torch.testing.assert_close(out.alpha[4, 4, 0], torch.tensor(1 - 0.005 * 0.25),
                               rtol=0, atol=1e-6)
    # alpha clamped to 0.999, then 1e-3·0.005 <= 1e-4: the second is not composited and
    # the pixel ends, so the third (alone it would leave T = 5e-4) is not composited either
    out, colors = stack([0.9995, 0.995, 0.5])
    torch.testing.assert_close(out.alpha[4, 4, 0], torch.tensor(0.999), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.image[4, 4], 0.999 * colors[0], rtol=0, atol=1e-6)


def test_huge_splat_is_bounded_and_flat():
    cam = _camera(40, 30, f=50.0)
    means = torch.tensor([[0.0, 0.0, 1.0]])
    covars = (100.0 * torch.eye(3))[None]  # σ = 500 px at 1 m
    out = rasterize(means, covars, torch.tensor([0.6]), torch.ones(1, 3), cam, backend="torch")
    # the whole image sits within 0.1σ of the centre: alpha ≈ opacity (exp(−0.005) ≥ 0.995)
    assert float(out.alpha.min()) > 0.6 * 0.995 and float(out.alpha.max()) <= 0.6 + 1e-6
    assert int(out.radii[0]) > 1000


def test_reference_matches_dense_on_benchmark_scene():
    # the benchmark's own scene type (random rotations, σ 1–4 px), 300 Gaussians at 32²
    means, quats, log_scales, opac, colors, cam = make_benchmark_scene(300, 32, seed=5)
    covars = covariance_from_rotation_scale(_quat_to_rotmat(quats), log_scales.exp())
    out = rasterize_torch(means, covars, opac, colors, cam, chunk_pairs=100)
    image, acc, _ = dense_render(means, covars, opac, colors, cam)
    torch.testing.assert_close(out.image, image, rtol=0, atol=1e-5)  # float32 sum order
    torch.testing.assert_close(out.alpha, acc, rtol=0, atol=1e-5)


def test_projection_matches_gsplat_torch_impl():
    # gsplat ships a pure-PyTorch version of its projection (private API): our means2d,
    # conics and depths must equal it (float64), Jacobian FOV clamp included.
    try:
        from gsplat.cuda._torch_impl import _fully_fused_projection
    except Exception as exc:  # not installed, or the private module moved
        pytest.skip(f"gsplat's torch projection not importable: {exc}")
    from engine.raster.torch_ref import project_gaussians

    means, covars, opac, _, cam = _random_scene(60, 48, seed=6)
    proj = project_gaussians(means, covars, opac, cam)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, cam.viewmat[None], cam.K[None], cam.width, cam.height)
    vis = proj.visible
    assert vis.sum() > 40 and not vis[-1]  # the last Gaussian is behind the camera
    # float64, identical formulas: worst seen ~1e-13
    torch.testing.assert_close(proj.means2d[vis], means2d[0][vis], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(proj.conics[vis], conics[0][vis], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(proj.depths[vis], depths[0][vis], rtol=0, atol=1e-12)
    # every Gaussian we keep is one gsplat keeps (gsplat's CUDA kernel also culls opacity < 1/255)
    assert torch.all((radii[0][vis] > 0).all(-1))


def test_covariance_from_rotation_scale():
    R = _quat_to_rotmat(torch.tensor([[math.cos(0.3), 0.0, 0.0, math.sin(0.3)]]))  # 0.6 rad about z
    s = torch.tensor([[0.1, 0.2, 0.3]])
    cov = covariance_from_rotation_scale(R, s)
    expect = R[0] @ torch.diag(s[0] ** 2) @ R[0].T
    torch.testing.assert_close(cov[0], expect, rtol=1e-6, atol=1e-8)  # float32
    torch.testing.assert_close(torch.linalg.eigvalsh(cov[0]), torch.tensor([0.01, 0.04, 0.09]),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(FateError, match="scales"):
        covariance_from_rotation_scale(R, torch.ones(1, 2))


def test_backend_selection_and_errors():
    assert "torch" in available_backends()
    assert default_backend("cpu") == "torch"
    if not torch.cuda.is_available():
        assert available_backends() == ["torch"]
        with pytest.raises(ConfigError, match="gsplat"):
            rasterize(torch.zeros(1, 3), torch.eye(3)[None], torch.ones(1), torch.ones(1, 3),
                      _camera(4, 4, 4.0), backend="gsplat")
    with pytest.raises(ConfigError, match="backend"):
        rasterize(torch.zeros(1, 3), torch.eye(3)[None], torch.ones(1), torch.ones(1, 3),
                  _camera(4, 4, 4.0), backend="cycles")  # type: ignore[arg-type]
    with pytest.raises(FateError, match="covars"):
        rasterize(torch.zeros(2, 3), torch.eye(3)[None], torch.ones(2), torch.ones(2, 3),
                  _camera(4, 4, 4.0))


def test_benchmark_runs():
    rate = benchmark(n=300, res=32, iters=1)
    assert rate > 0 and math.isfinite(rate)
