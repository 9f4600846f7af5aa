"""engine.io.images: PNG/EXR round trips, channel order, atomic writes, errors."""

import numpy as np
import pytest

from engine.errors import FateError
from engine.io.atomic import atomic_path
from engine.io.images import ImageIOError, read_exr, read_image, write_exr, write_png


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_uint8_round_trip_exact(tmp_path, rng, channels):
    arr = rng.integers(0, 256, size=(7, 5, channels), dtype=np.uint8)
    p = tmp_path / "a.png"
    write_png(p, arr)
    back = read_image(p)
    assert back.dtype == np.float32 and back.shape == (7, 5, channels)
    np.testing.assert_array_equal(np.round(back * 255).astype(np.uint8), arr)
    # Values are exactly k/255 in float32.
    np.testing.assert_array_equal(back, arr.astype(np.float32) / np.float32(255))


def test_png_float_quantisation_and_2d(tmp_path):
    arr = np.array([[0.0, 0.5, 1.0, 1.7], [-0.2, 0.25, 0.999, 0.001]], dtype=np.float32)
    p = tmp_path / "g.png"
    write_png(p, arr)
    back = read_image(p)
    assert back.shape == (2, 4, 1)
    expected = np.round(np.clip(arr, 0, 1) * 255) / 255
    np.testing.assert_allclose(back[:, :, 0], expected, rtol=0, atol=1e-7)  # float32 of k/255


def test_png_16bit_read_as_fraction(tmp_path, rng):
    import imageio.v3 as iio

    arr = rng.integers(0, 65536, size=(4, 3), dtype=np.uint16)
    p = tmp_path / "g16.png"
    iio.imwrite(p, arr)
    back = read_image(p)
    np.testing.assert_allclose(back[:, :, 0], arr / 65535.0, rtol=0, atol=1e-7)  # float32 rounding


@pytest.mark.parametrize("channels", [1, 3, 4, 5])
def test_exr_float32_round_trip_exact(tmp_path, rng, channels):
    arr = (rng.normal(size=(6, 9, channels)) * 100).astype(np.float32)
    arr[0, 0, 0] = 1e-30  # denormal-ish and huge values survive too
    arr[1, 1, -1] = 3e38
    names = None if channels <= 4 else [f"c{i}" for i in range(channels)]
    p = tmp_path / "m.exr"
    write_exr(p, arr, channel_names=names)
    back, got = read_exr(p)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, arr)
    expected = {1: ["Y"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}.get(channels, names)
    assert got == expected
    np.testing.assert_array_equal(read_image(p), arr)


def test_exr_custom_order_and_half(tmp_path, rng):
    arr = rng.random(size=(3, 4, 3)).astype(np.float32)
    p = tmp_path / "o.exr"
    write_exr(p, arr, channel_names=["z", "B", "a"])  # EXR stores sorted: B, a, z
    back, names = read_exr(p)
    assert names == ["z", "B", "a"]
    np.testing.assert_array_equal(back, arr)
    write_exr(p, arr[:, :, 0], half=True)
    back, names = read_exr(p)
    assert names == ["Y"] and back.shape == (3, 4, 1)
    np.testing.assert_array_equal(back[:, :, 0], arr[:, :, 0].astype(np.float16).astype(np.float32))


def test_exr_without_order_attribute_uses_rgba_order(tmp_path, rng):
    import OpenEXR

    arr = rng.random(size=(2, 3)).astype(np.float32)
    p = tmp_path / "plain.exr"
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                      {"A": arr, "B": arr + 1, "G": arr + 2, "R": arr + 3, "depth": arr + 4}) as f:
        f.write(str(p))
    back, names = read_exr(p)
    assert names == ["R", "G", "B", "A", "depth"]
    np.testing.assert_array_equal(back[:, :, 0], arr + 3)
    np.testing.assert_array_equal(back[:, :, 4], arr + 4)


def test_atomic_write_leaves_no_temp_and_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "x.png"
    write_png(p, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert read_image(p).shape == (2, 2, 3)  # old file intact
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.png"]
    write_exr(tmp_path / "sub" / "y.exr", np.zeros((2, 2), np.float32))
    assert sorted(f.name for f in (tmp_path / "sub").iterdir()) == ["y.exr"]


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageIOError, match="nope.png"):
        read_image(missing)
    with pytest.raises(ImageIOError, match="nope.exr"):
        read_exr(tmp_path / "nope.exr")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageIOError, match="bad.png"):
        read_image(bad)
    with pytest.raises(ImageIOError, match="w.png"):
        write_png(tmp_path / "w.png", np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ImageIOError, match="nan.png"):
        write_png(tmp_path / "nan.png", np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ImageIOError, match="e.exr.*channel"):
        write_exr(tmp_path / "e.exr", np.zeros((2, 2, 3), np.float32), channel_names=["R", "R", "B"])
    with pytest.raises(ImageIOError, match="i.exr"):
        write_exr(tmp_path / "i.exr", np.zeros((2, 2), np.int32))
    assert issubclass(ImageIOError, FateError)
