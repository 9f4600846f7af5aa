"""Internal operator that shows a message from a timer callback (jobs) in the status bar / Info log."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty


class FATE_OT_show_report(bpy.types.Operator):
    """Show a FATE worker message"""

    bl_idname = "fate.show_report"
    bl_label = "FATE Message"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=(("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")),
                        default="INFO")
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


CLASSES = (FATE_OT_show_report,)
