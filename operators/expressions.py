"""Expression presets (save, apply, delete), reset to neutral, and the eyes' look-at target."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, StringProperty

from ..addon.errors import FateAddonError


def _head(context):
    from ..addon.rig.bindings import find_head_object

    return find_head_object(context.active_object)


class _HeadOperator:
    """Poll: the active object belongs to an imported avatar with a rig."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        head = _head(context)
        return head is not None and head.parent is not None and head.parent.type == "ARMATURE"

    def run(self, context, head) -> str:
        """Does the work; returns the message to report. Raises FateAddonError."""
        raise NotImplementedError

    def execute(self, context):
        try:
            message = self.run(context, _head(context))
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}


class FATE_OT_preset_save(_HeadOperator, bpy.types.Operator):
    """Save the current frame's expression values and joint rotations as a named preset"""

    bl_idname = "fate.preset_save"
    bl_label = "Save Preset"

    name: StringProperty(name="Name", description="Preset name (default: the sidebar's preset name)")

    def run(self, context, head):
        from ..addon.rig.presets import save_preset

        name = self.name or context.scene.fate.preset_name
        preset = save_preset(head, name)
        return (f"Saved preset '{name.strip()}' ({len(preset['expressions'])} expressions, "
                f"{len(preset['bones'])} joints)")


class FATE_OT_preset_apply(_HeadOperator, bpy.types.Operator):
    """Set a preset's expression and joint rotations and key them on the current frame (on top of
    the tracking)"""

    bl_idname = "fate.preset_apply"
    bl_label = "Apply Preset"

    name: StringProperty(name="Name")
    key: BoolProperty(name="Insert Keys", default=True,
                      description="Key the values on the current frame (without keys the tracking sets "
                                  "them back on the next frame change)")

    def run(self, context, head):
        from ..addon.rig.presets import apply_preset

        apply_preset(head, self.name, key=self.key)
        keyed = f" (keyed on frame {context.scene.frame_current})" if self.key else ""
        return f"Applied preset '{self.name}'{keyed}"


class FATE_OT_preset_delete(_HeadOperator, bpy.types.Operator):
    """Delete a saved preset"""

    bl_idname = "fate.preset_delete"
    bl_label = "Delete Preset"

    name: StringProperty(name="Name")

    def run(self, context, head):
        from ..addon.rig.presets import delete_preset

        delete_preset(head, self.name)
        return f"Deleted preset '{self.name}'"


class FATE_OT_expression_neutral(_HeadOperator, bpy.types.Operator):
    """Every expression to 0 and every joint but the root to rest, keyed on the current frame"""

    bl_idname = "fate.expression_neutral"
    bl_label = "Reset to Neutral"

    key: BoolProperty(name="Insert Keys", default=True, description="Key the neutral values on the current frame")

    def run(self, context, head):
        from ..addon.rig.presets import reset_to_neutral

        reset_to_neutral(head, key=self.key)
        return "Expression and pose reset to neutral"


class FATE_OT_look_at_add(_HeadOperator, bpy.types.Operator):
    """Add an Empty in front of the eyes that the eye bones follow (Damped Track); move it to direct
    the gaze, lower the constraints' influence to blend back to the tracked gaze"""

    bl_idname = "fate.look_at_add"
    bl_label = "Add Look-At Target"

    def run(self, context, head):
        from ..addon.rig.presets import add_look_at_target

        target = add_look_at_target(head)
        return f"The eyes follow '{target.name}'"


CLASSES = (FATE_OT_preset_save, FATE_OT_preset_apply, FATE_OT_preset_delete, FATE_OT_expression_neutral,
           FATE_OT_look_at_add)
