"""Engine jobs: the worker client and what surrounds it.

- :mod:`.worker`: runs ``python -m engine <job>`` and follows its events (stdlib only);
- :mod:`.config`: the job configurations the add-on builds, checked against ``job_schema.json``;
- :mod:`.runtime`: the one active job inside Blender (timer, ``scene.fate``, status bar), and
  :mod:`.preview`: the worker's preview image;
- :mod:`.install_engine`: the "Install Engine" script (stdlib only, run as a worker job).

May import: :mod:`addon.errors`; :mod:`.runtime` and :mod:`.preview` also bpy. Nothing else of the
add-on.
"""
