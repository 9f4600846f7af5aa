"""The "FATE Splats" render engine: viewport and final/animation renders of head avatars.

Both paths use the one :class:`.drawer.SplatDrawer`:

- ``view_update`` / ``view_draw`` (3D viewport in Rendered shading): Gaussians are re-placed
  when the depsgraph changes (frame, shape keys, bones, modifiers, object transforms) or the
  maps change (:func:`.runtime.tag_maps_changed`, or an image update seen by the depsgraph
  while painting), re-sorted when the view changes, drawn into an offscreen and shown through
  Blender's display-space shader (so the view transform applies, as for F12).
- ``render`` (F12, animations, ``bpy.ops.render.render``; ``bl_use_gpu_context = True`` so it
  also works in background mode): honours the scene camera (perspective / orthographic, lens,
  sensor fit, shift, clip range), resolution and percentage, pixel aspect, the frame being
  rendered, the render border (cropped or not), film transparency (else the world colour is
  the background) and writes the "Depth" pass (camera z in meters, 1e10 where empty) when the
  view layer enables it. File format and frame range are Blender's own output settings. Map
  images are re-read for every rendered frame. Any error is reported, which cancels the render.

The rest of the scene: visible meshes (not the heads) are drawn first with simple solid shading
(:mod:`.scene_meshes`) and the splats are depth-tested against them (``scene.fate.splat_draw_meshes``).

Relightable (``pbr``) avatars: their splats are shaded with the scene's lights and world
(:mod:`.scene_lights`, :mod:`.shading`) for the camera before they are drawn — in F12 per frame,
in the viewport again whenever the view changes (the specular highlights follow it).

Colour: splats carry encoded (sRGB) colours. By default (``scene.fate.splat_composite =
"TRAINING"``) they composite over each other and over what is behind them in that space, like
the engine; the Combined pass is the result decoded to scene-linear premultiplied RGBA, and
Blender's colour management applies to it as to any render. With the "Standard" view transform
an 8-bit output therefore holds exactly the engine's image values; AgX or Filmic tone-map it
(a white world turns light grey, as in Cycles). ``"LINEAR"`` blends in scene linear, as Cycles
and EEVEE blend native splats.

Not supported: panoramic cameras, motion blur, multi-view/stereo.
"""

from __future__ import annotations

import logging
import time

import bpy
import numpy as np

from ..errors import SplatError
from . import runtime, scene_lights
from .cameras import border_rect, camera_from_object, camera_from_view, crop_camera, render_size
from .drawer import SplatDrawer, free_shaders, scene_depth
from .geometry import SplatGaussians
from .scene_meshes import MeshLayer, scene_meshes
from .scene_meshes import free_shaders as free_mesh_shaders

log = logging.getLogger(__name__)

ENGINE_ID = "FATE_SPLAT"

LAST_RENDER_STATS: dict[str, float] = {}
"""Timings (seconds) and counts of the last ``render()`` call: gaussians, shade (relightable
avatars' lighting), upload, sort, draw, readback, total, n. For benchmarks and diagnostics."""

# Existing property panels that make sense for this engine (output, format, frame range, film
# transparency, depth pass, colour management, camera). Names missing in a Blender version are
# skipped.
_PANELS = (
    "RENDER_PT_format", "RENDER_PT_format_presets", "RENDER_PT_frame_range",
    "RENDER_PT_time_stretching", "RENDER_PT_output", "RENDER_PT_output_views",
    "RENDER_PT_output_color_management", "RENDER_PT_encoding", "RENDER_PT_encoding_video",
    "RENDER_PT_encoding_audio", "RENDER_PT_ffmpeg_presets", "RENDER_PT_post_processing",
    "RENDER_PT_stamp", "RENDER_PT_stamp_note", "RENDER_PT_stamp_burn",
    "RENDER_PT_color_management", "RENDER_PT_color_management_working_space",
    "RENDER_PT_color_management_display_settings", "RENDER_PT_color_management_curves",
    "RENDER_PT_color_management_advanced", "RENDER_PT_color_management_white_balance",
    "RENDER_PT_opengl_film",
    "VIEWLAYER_PT_layer", "VIEWLAYER_PT_layer_passes", "VIEWLAYER_PT_workbench_layer_passes_data",
    "DATA_PT_context_camera", "DATA_PT_lens", "DATA_PT_camera", "DATA_PT_camera_display",
    "DATA_PT_camera_safe_areas", "DATA_PT_camera_background_image", "CAMERA_PT_presets",
    "DATA_PT_custom_props_camera", "WORLD_PT_context_world",
)


def _panel_classes() -> list[type]:
    return [c for c in (getattr(bpy.types, name, None) for name in _PANELS)
            if c is not None and hasattr(c, "COMPAT_ENGINES")]


COMPOSITE_TRAINING, COMPOSITE_LINEAR = "TRAINING", "LINEAR"
"""``scene.fate.splat_composite``: blend in the training (sRGB-encoded) space, as the engine
(the default: under the Standard view transform an 8-bit output equals the engine's image), or in
scene linear, as Cycles and EEVEE blend native splats."""


def splat_settings(scene: bpy.types.Scene) -> tuple[bool, bool]:
    """(blend in scene linear, draw the scene's meshes) from ``scene.fate`` (defaults: training
    space, meshes drawn; also when the add-on's properties are not registered)."""
    st = getattr(scene, "fate", None)
    linear = getattr(st, "splat_composite", COMPOSITE_TRAINING) == COMPOSITE_LINEAR
    return linear, bool(getattr(st, "splat_draw_meshes", True))


def world_background(scene: bpy.types.Scene) -> np.ndarray:
    """The world colour behind the splats, scene linear. [3] float32 (black without a world).

    Uses the world's Background node colour when its node tree has one, else ``world.color``.
    """
    world = scene.world
    if world is None:
        return np.zeros(3, np.float32)
    tree = getattr(world, "node_tree", None)
    if tree is not None:
        for node in tree.nodes:
            if node.type == 'BACKGROUND':
                col = node.inputs["Color"].default_value
                strength = node.inputs["Strength"].default_value
                return np.array(col[:3], np.float32) * np.float32(strength)
    return np.array(world.color[:3], np.float32)


class FATE_RE_splats(bpy.types.RenderEngine):
    """Gaussian head avatars as splats (FATE), in the viewport and in final renders."""

    bl_idname = ENGINE_ID
    bl_label = "FATE Splats"
    bl_use_preview = False
    bl_use_gpu_context = True
    bl_use_postprocess = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._drawer: SplatDrawer | None = None
        self._view_dirty = True
        self._view_generation = -1
        self._placed: SplatGaussians | None = None  # relightable splats before shading
        self._lighting = None
        self._shaded_for: tuple | None = None

    # ------------------------------------------------------------------ passes
    def update_render_passes(self, scene=None, renderlayer=None) -> None:
        """Declares Combined and, when the view layer enables it, the Depth pass."""
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", 'COLOR')
        if renderlayer is not None and renderlayer.use_pass_z:
            self.register_pass(scene, renderlayer, "Depth", 1, "Z", 'VALUE')

    # ------------------------------------------------------------------ final render
    def render(self, depsgraph: bpy.types.Depsgraph) -> None:
        """Renders the current frame of ``depsgraph`` (the render border, if any) into the
        render result. Any failure is reported as an error, which cancels the render (no file is
        written, an animation stops) instead of leaving a black frame."""
        try:
            self._render(depsgraph)
        except SplatError as exc:
            self.report({'ERROR'}, f"FATE Splats: {exc}")
        except Exception as exc:  # noqa: BLE001 - report, never a silent black frame
            log.exception("FATE Splats: render failed")
            self.report({'ERROR'}, f"FATE Splats: render failed: {type(exc).__name__}: {exc}")

    def _render(self, depsgraph: bpy.types.Depsgraph) -> None:
        t_start = time.perf_counter()
        scene = depsgraph.scene
        rd = scene.render
        width, height = render_size(rd)
        cam_obj = scene.camera
        if cam_obj is None:
            raise SplatError("the scene has no active camera")
        cam = camera_from_object(cam_obj.evaluated_get(depsgraph), depsgraph, width, height,
                                 (rd.pixel_aspect_x, rd.pixel_aspect_y))
        linear, with_meshes = splat_settings(scene)
        t0 = time.perf_counter()
        gaussians = runtime.scene_gaussians(depsgraph, resample=True)
        meshes = scene_meshes(depsgraph) if with_meshes else []
        t_gauss = time.perf_counter() - t0
        if self.test_break():
            return

        # The render border: Blender sizes the result to it (cropped or not); render exactly
        # those pixels with the full frame's camera (same pixel centres, same sort order).
        result = self.begin_result(0, 0, width, height, layer=depsgraph.view_layer.name)
        try:
            x0, y0, w, h = border_rect(rd, width, height, result.resolution_x, result.resolution_y)
            part = crop_camera(cam, x0, height - (y0 + h), w, h)
            background = None if rd.film_transparent else world_background(scene)
            t_shade = time.perf_counter()
            if gaussians.material is not None:  # relightable avatars: the scene's lights
                gaussians = scene_lights.shade_gaussians(gaussians, scene_lights.scene_lighting(depsgraph), cam)
            t_shade = time.perf_counter() - t_shade
            drawer = SplatDrawer()
            try:
                drawer.upload(gaussians, linear=linear)
                drawer.meshes = MeshLayer(meshes) if meshes else None
                combined, depth, mesh_z = drawer.render(part, background)
            finally:
                drawer.free()
            layer = result.layers[0]
            layer.passes["Combined"].rect.foreach_set(np.ascontiguousarray(combined).reshape(-1))
            depth_pass = layer.passes.find("Depth")
            if depth_pass >= 0:
                layer.passes[depth_pass].rect.foreach_set(scene_depth(depth, mesh_z).reshape(-1))
        except BaseException:
            self.end_result(result, cancel=True)
            raise
        self.end_result(result)

        LAST_RENDER_STATS.clear()
        LAST_RENDER_STATS.update(drawer.timings)
        LAST_RENDER_STATS.update(gaussians=t_gauss, shade=t_shade, n=float(len(gaussians)),
                                 meshes=float(len(meshes)), total=time.perf_counter() - t_start)
        log.debug("FATE Splats: frame %d, %d Gaussians, %dx%d: %s", scene.frame_current,
                  len(gaussians), w, h, LAST_RENDER_STATS)

    # ------------------------------------------------------------------ viewport
    def view_update(self, context: bpy.types.Context, depsgraph: bpy.types.Depsgraph) -> None:
        """Marks the Gaussians stale; image updates (painting) also mark the maps stale."""
        self._view_dirty = True
        for update in depsgraph.updates:
            if isinstance(update.id, bpy.types.Image):
                runtime.tag_maps_changed(update.id.name, redraw=False)
                scene_lights.forget_images()

    def view_texture(self, depsgraph: bpy.types.Depsgraph, region_data, width: int,
                     height: int, sync: bool = False):
        """The viewport image as a scene-linear premultiplied RGBA16F texture.

        Re-places the Gaussians when the depsgraph or the maps changed since the last call,
        re-sorts when the view changed, draws and converts. Separate from :meth:`view_draw`
        so it can be exercised headless (tests call it from ``render()``).

        Args:
            depsgraph: the viewport's depsgraph.
            region_data: a ``RegionView3D`` (``view_matrix``, ``window_matrix``).
            width, height: region size, pixels.
            sync: wait for the GPU to finish drawing (benchmarks).
        Returns:
            ``gpu.types.GPUTexture``; empty (background only) when no avatar can be built.
        """
        scene = depsgraph.scene
        if self._drawer is None:
            self._drawer = SplatDrawer()
        linear, with_meshes = splat_settings(scene)
        if (self._view_dirty or self._view_generation != runtime.maps_generation()
                or linear != self._drawer.linear):
            self._view_dirty = False
            self._view_generation = runtime.maps_generation()
            try:
                gaussians = runtime.scene_gaussians(depsgraph)
            except SplatError as exc:  # logged once per change, then nothing is drawn
                log.error("FATE Splats viewport: %s", exc)
                gaussians = SplatGaussians.empty()
            self._placed = gaussians if gaussians.material is not None else None
            self._lighting = scene_lights.scene_lighting(depsgraph) if self._placed is not None else None
            self._shaded_for = None
            if self._placed is None:
                self._drawer.upload(gaussians, linear=linear)
            self._drawer.meshes = MeshLayer(scene_meshes(depsgraph)) if with_meshes else None
        cam = camera_from_view(region_data, width, height)
        if self._placed is not None and self._shaded_for != cam.key():  # specular follows the view
            self._drawer.upload(scene_lights.shade_gaussians(self._placed, self._lighting, cam), linear=linear)
            self._shaded_for = cam.key()
        splats = self._drawer.render_texture(cam, with_depth=False, fmt='RGBA16F', sync=sync)
        background = None if scene.render.film_transparent else world_background(scene)
        return self._drawer.linearized_texture(splats, background)

    def view_draw(self, context: bpy.types.Context, depsgraph: bpy.types.Depsgraph) -> None:
        """Draws the splats of the visible head objects for the region's view."""
        import gpu
        from gpu_extras.presets import draw_texture_2d

        width, height = int(context.region.width), int(context.region.height)
        if width <= 0 or height <= 0:
            return
        linear = self.view_texture(depsgraph, context.region_data, width, height)
        gpu.state.blend_set('ALPHA_PREMULT')
        self.bind_display_space_shader(depsgraph.scene)
        draw_texture_2d(linear, (0, 0), width, height)
        self.unbind_display_space_shader()
        gpu.state.blend_set('NONE')


CLASSES = (FATE_RE_splats,)
"""Classes this module registers (addon/__init__ calls :func:`register`)."""


def register() -> None:
    """Registers the engine, adds it to the existing panels it supports and the native splats'
    render handler."""
    from . import native

    for cls in CLASSES:
        bpy.utils.register_class(cls)
    for panel in _panel_classes():
        panel.COMPAT_ENGINES.add(ENGINE_ID)
    native.register()


def unregister() -> None:
    """Removes the engine from the panels, unregisters it and drops caches and shaders."""
    from . import native

    native.unregister()
    for panel in _panel_classes():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    runtime.clear_caches()
    free_shaders()
    free_mesh_shaders()
