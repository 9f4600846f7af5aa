"""Jobs: the command line (a verb table), typed configs ↔ JSON ↔ flags, the worker protocol
(events, cancel, exit codes) and the job config schema for the Blender add-on."""
