"""engine/uv.py: UV rasterisation to (face, barycentric) samples and pixel helpers."""

from __future__ import annotations

import numpy as np
import torch

from engine.geometry.uv import (
    UVSamples,
    island_mask,
    pixel_to_uv,
    sample_uv_texels,
    uv_overlap_texels,
    uv_to_pixel,
)
from engine.model.mouth import mouth_closing_faces


def _check_samples(s: UVSamples, uvs, faces_uv, res):
    n = len(s)
    assert s.face_idx.shape == (n,) and s.face_idx.dtype == np.int64
    assert s.bary.shape == (n, 3) and s.bary.dtype == np.float32
    assert s.uv.shape == (n, 2) and s.uv.dtype == np.float32
    assert s.texel.shape == (n, 2) and s.texel.dtype == np.int64
    # barycentrics are a partition of unity (float32 rounding) and inside the face
    np.testing.assert_allclose(s.bary.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert s.bary.min() >= -1e-6
    # texel centre convention: row 0 = top (v ~ 1), centres at +0.5
    row, col = s.texel[:, 0], s.texel[:, 1]
    np.testing.assert_allclose(s.uv[:, 0], (col + 0.5) / res, rtol=0, atol=1e-6)
    np.testing.assert_allclose(s.uv[:, 1], 1.0 - (row + 0.5) / res, rtol=0, atol=1e-6)
    # bary @ corner uvs reproduces the texel centre (float32 bary on [0,1] uvs)
    rec = (np.asarray(uvs, np.float64)[np.asarray(faces_uv)[s.face_idx]] * s.bary[..., None]).sum(axis=1)
    np.testing.assert_allclose(rec, s.uv, rtol=0, atol=1e-5)
    # each texel at most once, in row-major order
    lin = row * res + col
    assert (np.diff(lin) > 0).all()


def test_square_two_triangles_covers_every_texel_once():
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32)
    faces_uv = np.array([[0, 1, 2], [0, 2, 3]])
    res = 16
    s = sample_uv_texels(uvs, faces_uv, res)
    _check_samples(s, uvs, faces_uv, res)
    assert len(s) == res * res
    assert island_mask(uvs, faces_uv, res).all()
    assert uv_overlap_texels(uvs, faces_uv, res) == 0


def test_single_triangle_count_and_tie_breaking():
    # lower-left half: centres with u + v <= 1 are those with col <= row: res(res+1)/2
    uvs = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)
    res = 32
    s = sample_uv_texels(uvs, np.array([[0, 1, 2]]), res)
    _check_samples(s, uvs, [[0, 1, 2]], res)
    assert len(s) == res * (res + 1) // 2
    # texels on the shared diagonal of two triangles go to exactly one of them
    uvs4 = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    s2 = sample_uv_texels(uvs4, np.array([[0, 1, 2], [1, 3, 2]]), res)
    assert len(s2) == res * res


def test_overlapping_faces_counted_and_assigned_once():
    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    faces_uv = np.array([[0, 1, 2], [0, 1, 2]])
    res = 20
    s = sample_uv_texels(uvs, faces_uv, res)
    one = sample_uv_texels(uvs, faces_uv[:1], res)
    assert len(s) == len(one)
    np.testing.assert_array_equal(s.face_idx, 0)  # ties go to the lower face index
    assert uv_overlap_texels(uvs, faces_uv, res) > 0.8 * len(s)


def test_deterministic_and_degenerate_faces_skipped():
    rng = np.random.default_rng(0)
    uvs = rng.random((50, 2)).astype(np.float32)
    faces_uv = rng.integers(0, 50, size=(40, 3))
    faces_uv[0] = [3, 3, 7]  # zero area
    a = sample_uv_texels(uvs, faces_uv, 64)
    b = sample_uv_texels(uvs, faces_uv, 64)
    for k in ("face_idx", "bary", "uv", "texel"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert 0 not in set(a.face_idx.tolist())
    _check_samples(a, uvs, faces_uv, 64)


def test_pixel_uv_helpers():
    res = 8
    uv = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [(2 + 0.5) / res, 1 - (5 + 0.5) / res]])
    px = uv_to_pixel(uv, res)
    np.testing.assert_allclose(px, [[0, 0], [8, 8], [4, 4], [2.5, 5.5]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(pixel_to_uv(px, res), uv, rtol=0, atol=1e-12)
    t = torch.tensor(uv, dtype=torch.float32)
    pt = uv_to_pixel(t, res)
    assert isinstance(pt, torch.Tensor)
    torch.testing.assert_close(pixel_to_uv(pt, res), t, rtol=0, atol=1e-6)
    # sample texels map to their pixel centres
    s = sample_uv_texels(np.array([[0, 0], [1, 0], [0, 1]], np.float32), np.array([[0, 1, 2]]), res)
    np.testing.assert_allclose(uv_to_pixel(s.uv, res), s.texel[:, ::-1] + 0.5, rtol=0, atol=1e-5)


def test_island_mask_orientation():
    # a triangle in the top-left corner of UV space (v near 1) lights the top rows
    uvs = np.array([[0.0, 1.0], [0.5, 1.0], [0.0, 0.5]], dtype=np.float32)
    mask = island_mask(uvs, np.array([[0, 1, 2]]), 10)
    assert mask[0, 0] and not mask[-1, 0] and not mask[0, -1]
    assert mask.sum() == len(sample_uv_texels(uvs, np.array([[0, 1, 2]]), 10))


def test_flame_template_sampling(flame_template):
    m = flame_template
    mf, mft = mouth_closing_faces(m.faces, m.faces_uv, m.vertices)
    ft_all = np.concatenate([m.faces_uv, mft])
    s = sample_uv_texels(m.uvs, ft_all, 256)
    _check_samples(s, m.uvs, ft_all, 256)
    # measured: 58550 samples at 256^2 (58515 without the mouth faces); FATE's "65k" is the
    # texel count of the whole image, the layout covers ~89 % of it
    assert 57000 < len(s) < 60000
    assert (s.face_idx >= len(m.faces)).sum() > 0  # mouth faces get samples too
    assert uv_overlap_texels(m.uvs, ft_all, 256) == 0
    mask = island_mask(m.uvs, ft_all, 256)
    assert mask.sum() == len(s)
