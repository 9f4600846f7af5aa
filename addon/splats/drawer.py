"""The one splat drawer (Blender ``gpu`` module), used by the viewport and by final renders.

It rasterises :class:`.geometry.SplatGaussians` with the same rules as the engine's
renderer (``engine/raster``, which mirrors gsplat 1.5 / 3DGS, Kerbl et al. 2023 §4–6), so the
two agree pixel for pixel up to float rounding:

- EWA splatting (Zwicker et al. 2002; 3DGS eq. 5): camera covariance ``W Σ Wᵀ`` projected
  with the pinhole Jacobian whose ``x/z``, ``y/z`` are clamped to the field of view widened by
  0.3·tan(fov/2) each side; ``+0.3 px²`` on the 2D covariance diagonal (low-pass filter).
- Culling: camera ``z`` outside [near, far], opacity < 1/255, ``det(Σ2d) <= 0``.
- Each Gaussian is one quad along the 2D covariance's eigenvectors, half-sizes
  ``k·sqrt(λ)`` with ``k = min(3.33, sqrt(2 ln(255·opacity)))`` σ: exactly the ellipse where
  ``alpha >= 1/255`` (at most the 3σ…3.33σ box of 3DGS / gsplat).
- Per pixel (centre at integer + 0.5): ``alpha = min(0.999, opacity · exp(−½ dᵀ Σ2d⁻¹ d))``,
  fragments with ``alpha < 1/255`` are discarded.
- Compositing: Gaussians sorted by camera z on the CPU (numpy argsort, redone only when the
  camera or the Gaussians change) and drawn back to front with premultiplied-alpha "over"
  blending, which equals the engine's front-to-back sum ``Σ cᵢ αᵢ Tᵢ`` (ties: the lower
  index is in front, as in the engine's stable sort). The engine also stops a pixel once
  ``T <= 1e-4``; blending cannot, so such pixels may differ by at most 1e-4.

Colours stay in the encoded (sRGB) space they were trained in; a second GPU pass
(:meth:`SplatDrawer.linearized_texture`) composites over the background in that space, like
the engine, and decodes to Blender's scene-linear premultiplied RGBA.

Draw targets (rows bottom first): colour = premultiplied encoded RGB + alpha; depth =
(Σ wᵢ zᵢ, 0, 0, Σ wᵢ) with ``wᵢ = αᵢ Tᵢ`` and ``z`` the OpenCV camera z in meters (the
engine's ``depth`` output). Final renders use RGBA32F; the viewport RGBA16F without depth.

Geometry: every Gaussian is expanded to 4 vertices (per-vertex copies of its centre,
covariance, colour and the quad corner) and 2 triangles; sorting only rebuilds the index
buffer. No ``gpu`` call happens at import: shaders are built on first use and cached (``gpu``
is unavailable at register time in background mode).
"""

from __future__ import annotations

import logging
import time

import gpu
import numpy as np
from mathutils import Matrix

from .cameras import DrawCamera
from .colour import linear_to_srgb, srgb_to_linear
from .geometry import SplatGaussians
from .scene_meshes import GLSL_PROJECT, MeshLayer

log = logging.getLogger(__name__)

EPS2D = 0.3
"""Low-pass filter added to the 2D covariance diagonal, px² (3DGS / gsplat ``eps2d``)."""
ALPHA_MIN = 1.0 / 255.0
"""Fragments with a smaller alpha are discarded; Gaussians with a smaller opacity are culled."""
ALPHA_MAX = 0.999
"""Per-fragment alpha clamp (gsplat ``min(0.999, …)``; the engine uses the same value)."""
MAX_EXTEND = 3.33
"""Cap on the quad half-size in standard deviations (gsplat)."""
FOV_MARGIN = 0.3
"""The Jacobian's x/z, y/z are clamped to the FOV widened by this fraction of tan(fov/2)."""
BACKGROUND_DEPTH = 1e10
"""Depth written where no splat covers a pixel, meters (Blender's empty Z value)."""

_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], np.float32)
_QUAD_TRIS = np.array([0, 1, 2, 2, 1, 3], np.uint32)

_VERT_SRC = f"""
void main()
{{
  v_d = vec2(0.0);
  v_conic = vec4(0.0);
  v_color = vec4(0.0);
  vec3 t = (viewmat * vec4(mean, 1.0)).xyz;
  float o = rgba.a;
  if (t.z < frame.z || t.z > frame.w || o < {ALPHA_MIN!r}) {{
    gl_Position = vec4(0.0, 0.0, 2.0, 1.0);  /* outside the clip volume: culled */
    return;
  }}
  mat3 S = mat3(cov_a.x, cov_a.y, cov_a.z,
                cov_a.y, cov_b.x, cov_b.y,
                cov_a.z, cov_b.y, cov_b.z);
  mat3 Rw = mat3(viewmat);
  mat3 C = Rw * S * transpose(Rw);
  float fx = intr.x, fy = intr.y, cx = intr.z, cy = intr.w;
  float W = frame.x, H = frame.y;
  vec2 mean2d;
  vec3 j0, j1;
  if (ortho > 0.5) {{
    mean2d = vec2(fx * t.x + cx, fy * t.y + cy);
    j0 = vec3(fx, 0.0, 0.0);
    j1 = vec3(0.0, fy, 0.0);
  }}
  else {{
    float rz = 1.0 / t.z;
    float tanx = 0.5 * W / fx, tany = 0.5 * H / fy;
    float tx = t.z * clamp(t.x * rz, -(cx / fx + {FOV_MARGIN!r} * tanx),
                           (W - cx) / fx + {FOV_MARGIN!r} * tanx);
    float ty = t.z * clamp(t.y * rz, -(cy / fy + {FOV_MARGIN!r} * tany),
                           (H - cy) / fy + {FOV_MARGIN!r} * tany);
    mean2d = vec2(fx * t.x * rz + cx, fy * t.y * rz + cy);
    j0 = vec3(fx * rz, 0.0, -fx * tx * rz * rz);
    j1 = vec3(0.0, fy * rz, -fy * ty * rz * rz);
  }}
  vec3 Cj0 = C * j0;
  vec3 Cj1 = C * j1;
  float a = dot(j0, Cj0) + {EPS2D!r};
  float b = dot(j0, Cj1);
  float c = dot(j1, Cj1) + {EPS2D!r};
  float det = a * c - b * b;
  if (!(det > 0.0)) {{
    gl_Position = vec4(0.0, 0.0, 2.0, 1.0);
    return;
  }}
  float ext = min({MAX_EXTEND!r}, sqrt(2.0 * log(o / {ALPHA_MIN!r})));
  float mid = 0.5 * (a + c);
  float disc = sqrt(0.25 * (a - c) * (a - c) + b * b);
  float l1 = mid + disc;
  float l2 = max(mid - disc, 0.0);
  vec2 e1;
  if (abs(b) > 1e-9 * (a + c)) {{
    e1 = normalize(vec2(b, l1 - a));
  }}
  else {{
    e1 = (a >= c) ? vec2(1.0, 0.0) : vec2(0.0, 1.0);
  }}
  vec2 e2 = vec2(-e1.y, e1.x);
  vec2 d = corner.x * ext * sqrt(l1) * e1 + corner.y * ext * sqrt(l2) * e2;
  vec2 p = mean2d + d;
  vec4 clip = project_cv(t);  /* the centre's depth, as the mesh pass writes it */
  gl_Position = vec4(2.0 * p.x / W - 1.0, 1.0 - 2.0 * p.y / H, clamp(clip.z / clip.w, -1.0, 1.0), 1.0);
  v_d = d;
  v_conic = vec4(c / det, -b / det, a / det, o);
  v_color = vec4(rgba.rgb, t.z);
}}
"""

_FRAG_SRC = f"""
void main()
{{
  float sigma = 0.5 * (v_conic.x * v_d.x * v_d.x + v_conic.z * v_d.y * v_d.y)
                + v_conic.y * v_d.x * v_d.y;
  float alpha = min({ALPHA_MAX!r}, v_conic.w * exp(-sigma));
  if (sigma < 0.0 || alpha < {ALPHA_MIN!r}) {{
    discard;
  }}
  out_color = vec4(v_color.rgb * alpha, alpha);
  out_depth = vec4(v_color.w * alpha, 0.0, 0.0, alpha);
}}
"""

# Full-screen pass (viewport and final renders): the splat layer over what is behind it (scene
# meshes, else the world colour, else nothing) → scene-linear premultiplied RGBA.
_LIN_VERT_SRC = """
void main()
{
  gl_Position = vec4(pos, 0.0, 1.0);
}
"""

_LIN_FRAG_SRC = """
vec3 srgb_to_linear(vec3 c)
{
  vec3 lo = c / 12.92;
  vec3 hi = pow((max(c, vec3(0.04045)) + 0.055) / 1.055, vec3(2.4));
  return mix(hi, lo, vec3(lessThanEqual(c, vec3(0.04045))));
}

vec3 linear_to_srgb(vec3 c)
{
  vec3 lo = c * 12.92;
  vec3 hi = 1.055 * pow(max(c, vec3(0.0031308)), vec3(1.0 / 2.4)) - 0.055;
  return mix(hi, lo, vec3(lessThanEqual(c, vec3(0.0031308))));
}

void main()
{
  ivec2 px = ivec2(gl_FragCoord.xy);
  vec4 c = texelFetch(image, px, 0);
  float a = clamp(c.a, 0.0, 1.0);
  vec4 behind = vec4(0.0);  /* scene linear, opaque or empty */
  if (modes.y > 0.5 && texelFetch(meshes, px, 0).a > 0.5) {
    behind = vec4(texelFetch(meshes, px, 0).rgb, 1.0);
  }
  else if (background.a > 0.5) {
    behind = vec4(background.rgb, 1.0);
  }
  if (modes.x > 0.5) {  /* splats blended in scene linear (as Cycles and EEVEE do) */
    out_color = vec4(max(c.rgb, vec3(0.0)) + (1.0 - a) * behind.rgb, a + (1.0 - a) * behind.a);
  }
  else if (behind.a > 0.5) {  /* training space: composite the encoded values, like the engine */
    vec3 enc = clamp(c.rgb + (1.0 - a) * linear_to_srgb(clamp(behind.rgb, 0.0, 1.0)), 0.0, 1.0);
    out_color = vec4(srgb_to_linear(enc), 1.0);
  }
  else {
    vec3 enc = (a > 0.0) ? clamp(c.rgb / a, 0.0, 1.0) : vec3(0.0);
    out_color = vec4(srgb_to_linear(enc) * a, a);
  }
}
"""

_SHADERS: dict[str, gpu.types.GPUShader] = {}


def _cached_shader(name: str, describe) -> gpu.types.GPUShader:
    """The shader ``name``, compiled on first use from ``describe(info)`` and cached.

    Args:
        name: cache key.
        describe: fills a ``gpu.types.GPUShaderCreateInfo`` (interface and sources).
    """
    sh = _SHADERS.get(name)
    if sh is None:
        info = gpu.types.GPUShaderCreateInfo()
        describe(info)
        sh = _SHADERS[name] = gpu.shader.create_from_info(info)
    return sh


def _describe_splat(info: gpu.types.GPUShaderCreateInfo) -> None:
    info.push_constant('MAT4', "viewmat")
    info.push_constant('VEC4', "intr")
    info.push_constant('VEC4', "frame")
    info.push_constant('FLOAT', "ortho")
    info.vertex_in(0, 'VEC3', "mean")
    info.vertex_in(1, 'VEC3', "cov_a")
    info.vertex_in(2, 'VEC3', "cov_b")
    info.vertex_in(3, 'VEC4', "rgba")
    info.vertex_in(4, 'VEC2', "corner")
    iface = gpu.types.GPUStageInterfaceInfo("fate_splat_iface")
    iface.smooth('VEC2', "v_d")
    iface.flat('VEC4', "v_conic")
    iface.flat('VEC4', "v_color")
    info.vertex_out(iface)
    info.fragment_out(0, 'VEC4', "out_color")
    info.fragment_out(1, 'VEC4', "out_depth")
    info.vertex_source(GLSL_PROJECT + _VERT_SRC)
    info.fragment_source(_FRAG_SRC)


def _describe_linearize(info: gpu.types.GPUShaderCreateInfo) -> None:
    info.push_constant('VEC4', "background")
    info.push_constant('VEC4', "modes")
    info.sampler(0, 'FLOAT_2D', "image")
    info.sampler(1, 'FLOAT_2D', "meshes")
    info.vertex_in(0, 'VEC2', "pos")
    info.fragment_out(0, 'VEC4', "out_color")
    info.vertex_source(_LIN_VERT_SRC)
    info.fragment_source(_LIN_FRAG_SRC)


def _splat_shader() -> gpu.types.GPUShader:
    """The splat shader, compiled on first use and cached."""
    return _cached_shader("splat", _describe_splat)


def _linearize_shader() -> gpu.types.GPUShader:
    """The viewport's encoded → linear pass, compiled on first use and cached."""
    return _cached_shader("linearize", _describe_linearize)


def free_shaders() -> None:
    """Drops the cached shaders (unregister)."""
    _SHADERS.clear()


def _vert_format() -> gpu.types.GPUVertFormat:
    fmt = gpu.types.GPUVertFormat()
    fmt.attr_add(id="mean", comp_type='F32', len=3, fetch_mode='FLOAT')
    fmt.attr_add(id="cov_a", comp_type='F32', len=3, fetch_mode='FLOAT')
    fmt.attr_add(id="cov_b", comp_type='F32', len=3, fetch_mode='FLOAT')
    fmt.attr_add(id="rgba", comp_type='F32', len=4, fetch_mode='FLOAT')
    fmt.attr_add(id="corner", comp_type='F32', len=2, fetch_mode='FLOAT')
    return fmt


def sort_back_to_front(means: np.ndarray, viewmat: np.ndarray) -> np.ndarray:
    """Drawing order: farthest camera z first; equal z keeps the lower index in front.

    Args:
        means: centres, world frame, meters. [N, 3]
        viewmat: world→camera (OpenCV). [4, 4]
    Returns:
        Gaussian indices in drawing order. [N] int64
    """
    R = np.asarray(viewmat, dtype=np.float64)
    z = means @ R[2, :3].astype(np.float32) + np.float32(R[2, 3])
    return np.argsort(z, kind="stable")[::-1]


def _read_texture(tex: gpu.types.GPUTexture) -> np.ndarray:
    """Reads an RGBA float texture as [H, W, 4] float32, bottom row first.

    (A 3-D ``gpu.types.Buffer`` exposes wrong strides to numpy in bpy 5.0, so flatten it first.)
    """
    buf = tex.read()
    buf.dimensions = tex.width * tex.height * 4
    return np.array(buf, dtype=np.float32).reshape(tex.height, tex.width, 4)


class SplatDrawer:
    """Uploads Gaussians once, sorts per camera, draws into the bound framebuffer.

    Every method needs an active GPU context (``view_draw``, or ``render()`` of an engine with
    ``bl_use_gpu_context = True``).
    """

    def __init__(self) -> None:
        self._vbo: gpu.types.GPUVertBuf | None = None
        self._batch: gpu.types.GPUBatch | None = None
        self._means: np.ndarray | None = None
        self._n = 0
        self._sort_key: tuple | None = None
        self._targets: tuple | None = None  # (key, colour, depth accum, z-buffer, splat fb, mesh fb...)
        self._lin_target: tuple | None = None
        self.linear = False
        """Colours were uploaded scene linear (blending in linear, as Cycles/EEVEE) instead of in
        the training (sRGB-encoded) space."""
        self.meshes: MeshLayer | None = None
        """The rest of the scene (:class:`.scene_meshes.MeshLayer`), drawn first and depth-tested
        against; None = splats only."""
        self.timings: dict[str, float] = {}
        """Seconds spent in the last upload / sort / draw / readback (benchmarks)."""

    # -------------------------------------------------------------------- data
    def __len__(self) -> int:
        return self._n

    def upload(self, g: SplatGaussians, linear: bool = False) -> None:
        """Uploads new Gaussians (the next draw re-sorts).

        Args:
            g: world-space Gaussians (see :class:`.geometry.SplatGaussians`).
            linear: blend in scene linear (colours decoded with the sRGB curve first) instead of
                in the encoded space the avatar was trained in.
        """
        t0 = time.perf_counter()
        n = len(g)
        self._n = n
        self._sort_key = None
        self._batch = None
        self.linear = bool(linear)
        if n == 0:
            self._vbo = None
            self._means = None
            self.timings["upload"] = time.perf_counter() - t0
            return
        cov = g.covars
        cov_a = np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 0, 2]], -1)
        cov_b = np.stack([cov[:, 1, 1], cov[:, 1, 2], cov[:, 2, 2]], -1)
        colors = srgb_to_linear(np.clip(g.colors, 0.0, 1.0)) if linear else g.colors
        rgba = np.concatenate([colors, g.opacities[:, None]], -1)

        def quad(x: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.repeat(x.astype(np.float32), 4, axis=0))

        vbo = gpu.types.GPUVertBuf(_vert_format(), 4 * n)
        vbo.attr_fill("mean", quad(g.means))
        vbo.attr_fill("cov_a", quad(cov_a))
        vbo.attr_fill("cov_b", quad(cov_b))
        vbo.attr_fill("rgba", quad(rgba))
        vbo.attr_fill("corner", np.ascontiguousarray(np.tile(_CORNERS, (n, 1))))
        self._vbo = vbo
        self._means = np.ascontiguousarray(g.means, dtype=np.float32)
        self.timings["upload"] = time.perf_counter() - t0

    def _ensure_sorted(self, cam: DrawCamera) -> None:
        key = cam.key()
        if self._batch is not None and key == self._sort_key:
            return
        t0 = time.perf_counter()
        order = sort_back_to_front(self._means, cam.viewmat).astype(np.uint32)
        idx = (4 * order)[:, None] + _QUAD_TRIS[None, :]
        ibo = gpu.types.GPUIndexBuf(type='TRIS', seq=np.ascontiguousarray(idx.reshape(-1, 3)))
        self._batch = gpu.types.GPUBatch(type='TRIS', buf=self._vbo, elem=ibo)
        self._sort_key = key
        self.timings["sort"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- drawing
    def draw(self, cam: DrawCamera, depth_test: bool = False) -> None:
        """Draws the Gaussians into the bound framebuffer (its size must be cam's size).

        Slot 0 receives premultiplied colour + alpha, slot 1 (if present) the alpha-weighted
        depth; both blend premultiplied "over" onto what is there. With ``depth_test`` a splat
        whose centre lies behind the bound depth buffer (the scene meshes) is not drawn.
        """
        if self._n == 0:
            return
        self._ensure_sorted(cam)
        sh = _splat_shader()
        gpu.state.depth_test_set('LESS_EQUAL' if depth_test else 'NONE')
        gpu.state.depth_mask_set(False)
        gpu.state.face_culling_set('NONE')
        gpu.state.blend_set('ALPHA_PREMULT')
        sh.bind()
        sh.uniform_float("viewmat", Matrix(cam.viewmat.tolist()))
        sh.uniform_float("intr", (cam.fx, cam.fy, cam.cx, cam.cy))
        sh.uniform_float("frame", (float(cam.width), float(cam.height), cam.near, cam.far))
        sh.uniform_float("ortho", 1.0 if cam.ortho else 0.0)
        self._batch.draw(sh)
        gpu.state.blend_set('NONE')
        gpu.state.depth_test_set('NONE')

    def _render_targets(self, width: int, height: int, with_depth: bool = True,
                        fmt: str = 'RGBA32F') -> tuple:
        """(key, colour, depth accumulation | None, z-buffer, splat framebuffer, mesh colour,
        mesh camera z, mesh framebuffer), created once per size and format."""
        key = (width, height, with_depth, fmt)
        if self._targets is None or self._targets[0] != key:
            color = gpu.types.GPUTexture((width, height), format=fmt)
            zbuf = gpu.types.GPUTexture((width, height), format='DEPTH_COMPONENT32F')
            slots = (color,)
            depth = None
            if with_depth:
                depth = gpu.types.GPUTexture((width, height), format=fmt)
                slots = (color, depth)
            fb = gpu.types.GPUFrameBuffer(depth_slot=zbuf, color_slots=slots)
            mesh_color = gpu.types.GPUTexture((width, height), format=fmt)
            mesh_z = gpu.types.GPUTexture((width, height), format='RGBA32F')
            mesh_fb = gpu.types.GPUFrameBuffer(depth_slot=zbuf, color_slots=(mesh_color, mesh_z))
            self._targets = (key, color, depth, zbuf, fb, mesh_color, mesh_z, mesh_fb)
        return self._targets

    def render_texture(self, cam: DrawCamera, with_depth: bool = True, fmt: str = 'RGBA32F',
                       sync: bool = False) -> gpu.types.GPUTexture:
        """Draws the meshes (if any) and the splats into the drawer's own targets; returns the
        splat colour texture (premultiplied colour + alpha), valid until the next call.

        Args:
            cam: the camera (its size is the targets' size).
            with_depth: also fill the depth attachment (final renders). The viewport skips it
                and uses ``fmt='RGBA16F'``: about 30 % less fill cost on Mesa llvmpipe.
            fmt: texture format of the targets ('RGBA32F' or 'RGBA16F').
            sync: wait for the GPU to finish (reads one pixel back) so that
                ``timings["draw"]`` is the real draw time, not just the submission.
        """
        _, color, _, _, fb, _, _, mesh_fb = self._render_targets(cam.width, cam.height, with_depth, fmt)
        t0 = time.perf_counter()
        with_meshes = self.meshes is not None and len(self.meshes) > 0
        with mesh_fb.bind():
            mesh_fb.clear(color=(0.0, 0.0, 0.0, 0.0), depth=1.0)
            if with_meshes:
                self.meshes.draw(cam)
        with fb.bind():
            fb.clear(color=(0.0, 0.0, 0.0, 0.0))
            self.draw(cam, depth_test=with_meshes)
            if sync:
                fb.read_color(0, 0, 1, 1, 4, 0, 'FLOAT')
        gpu.shader.unbind()
        self.timings["draw"] = time.perf_counter() - t0
        return color

    def render(self, cam: DrawCamera, background_linear: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Final-render path: draws, composites to Blender's Combined pass and reads back.

        Args:
            cam: the camera (output size = its size).
            background_linear: world colour behind everything, scene linear [3], or None for a
                transparent film.
        Returns:
            combined: scene-linear premultiplied RGBA (see :meth:`linearized_texture`).
                [H, W, 4] float32, bottom row first
            depth: (Σ wᵢ zᵢ, 0, 0, Σ wᵢ), OpenCV camera z in meters. [H, W, 4] float32,
                bottom row first
            mesh_z: camera z of the nearest scene mesh, m, 0 where none; None without meshes.
                [H, W] float32, bottom row first
        """
        color = self.render_texture(cam, with_depth=True, fmt='RGBA32F', sync=True)
        t0 = time.perf_counter()
        linear = self.linearized_texture(color, background_linear, fmt='RGBA32F')
        combined = _read_texture(linear)
        depth = _read_texture(self._targets[2])
        mesh_z = None
        if self.meshes is not None and len(self.meshes) > 0:
            mesh = _read_texture(self._targets[6])
            mesh_z = np.where(mesh[..., 3] > 0.5, mesh[..., 0], 0.0).astype(np.float32)
        self.timings["readback"] = time.perf_counter() - t0
        return combined, depth, mesh_z

    def linearized_texture(self, src: gpu.types.GPUTexture, background_linear: np.ndarray | None,
                           fmt: str = 'RGBA16F') -> gpu.types.GPUTexture:
        """The splat layer over the scene meshes / world colour → scene-linear premultiplied
        texture (GPU pass).

        In the training space (default) the splats composite over what is behind them in the
        encoded space, exactly like the engine (``image = Σ wᵢ cᵢ + T·background``), then the
        sRGB transfer function decodes the result and alpha is 1; with nothing behind (transparent
        film, no mesh) colour is un-premultiplied, decoded and re-premultiplied. With
        :attr:`linear` (splats uploaded linear) the composite is plain premultiplied "over" in
        scene linear, as in Cycles and EEVEE. Encoded values are clamped to [0, 1] first.

        Args:
            src: output of :meth:`render_texture`.
            background_linear: world colour, scene linear [3] (clamped to [0, 1] in the
                training space), or None for a transparent film.
            fmt: output format: 'RGBA16F' for the viewport (Blender's display-space shader
                draws it), 'RGBA32F' for final renders.
        Returns:
            texture of ``src``'s size, valid until the next call.
        """
        key = (src.width, src.height, fmt)
        if self._lin_target is None or self._lin_target[0] != key:
            tex = gpu.types.GPUTexture((src.width, src.height), format=fmt)
            self._lin_target = (key, tex, gpu.types.GPUFrameBuffer(color_slots=(tex,)))
        _, tex, fb = self._lin_target
        sh = _linearize_shader()
        from gpu_extras.batch import batch_for_shader

        tri = np.array([[-1.0, -1.0], [3.0, -1.0], [-1.0, 3.0]], np.float32)
        batch = batch_for_shader(sh, 'TRIS', {"pos": tri})
        bg = (0.0, 0.0, 0.0, 0.0) if background_linear is None else (
            *(float(x) for x in background_linear[:3]), 1.0)
        with_meshes = self.meshes is not None and len(self.meshes) > 0
        mesh_color = self._targets[5] if self._targets is not None else src
        with fb.bind():
            gpu.state.blend_set('NONE')
            sh.bind()
            sh.uniform_float("background", bg)
            sh.uniform_float("modes", (1.0 if self.linear else 0.0, 1.0 if with_meshes else 0.0, 0.0, 0.0))
            sh.uniform_sampler("image", src)
            sh.uniform_sampler("meshes", mesh_color)
            batch.draw(sh)
        gpu.shader.unbind()
        return tex

    def free(self) -> None:
        """Releases GPU buffers (textures are freed with their last reference)."""
        self._vbo = None
        self._batch = None
        self._means = None
        self._n = 0
        self._sort_key = None
        self._targets = None
        self._lin_target = None
        self.meshes = None


# ------------------------------------------------------------------------------ result maths
def expected_depth(depth: np.ndarray, min_alpha: float = 1e-6) -> np.ndarray:
    """Alpha-normalised depth for Blender's Depth pass.

    Args:
        depth: drawer depth output (Σ w z, 0, 0, Σ w). [H, W, 4]
        min_alpha: below this accumulated alpha a pixel counts as empty.
    Returns:
        camera z in meters, :data:`BACKGROUND_DEPTH` where empty. [H, W] float32
    """
    acc = depth[..., 3]
    out = np.full(acc.shape, BACKGROUND_DEPTH, np.float32)
    hit = acc > min_alpha
    out[hit] = depth[..., 0][hit] / acc[hit]
    return out


def linear_background_to_encoded(background_linear: np.ndarray) -> np.ndarray:
    """World colour (scene linear) → the encoded space the splats composite in. [3]"""
    return linear_to_srgb(np.clip(np.asarray(background_linear, np.float32), 0.0, 1.0))


def scene_depth(splat_depth: np.ndarray, mesh_z: np.ndarray | None, min_alpha: float = 1e-6) -> np.ndarray:
    """Blender's Depth pass with the scene meshes: the splats' alpha-normalised depth where they
    cover a pixel (they are never behind a mesh: the splat pass is depth-tested), else the mesh's
    camera z, else :data:`BACKGROUND_DEPTH`.

    Args:
        splat_depth: drawer depth output (Σ w z, 0, 0, Σ w). [H, W, 4]
        mesh_z: nearest mesh's camera z, m, 0 where none, or None. [H, W]
    Returns:
        camera z in meters. [H, W] float32
    """
    out = expected_depth(splat_depth, min_alpha)
    if mesh_z is not None:
        empty = (splat_depth[..., 3] <= min_alpha) & (mesh_z > 0.0)
        out[empty] = mesh_z[empty]
    return out
