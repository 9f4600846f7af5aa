"""Which head model a dataset was tracked with, and a warning when training uses another.

Coefficients only mean something for the model that produced them: FLAME 2023's shape and
expression bases differ from FLAME 2020's, and the trackers behind the public datasets
(metrical-tracker for INSTA/FATE, DECA for IMavatar/NerFace) fit FLAME 2020. The engine's own
tracker records the model it used in ``<dataset>/tracking/report.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.model.head_model import HeadModel, flame_version

log = logging.getLogger(__name__)

TRACKING_REPORT = Path("tracking") / "report.json"
"""Where ``engine track`` records its settings, the head model's name and sha256 among them."""


def dataset_head_model(dataset: Path) -> dict:
    """What is known of the model a dataset was tracked with.

    Returns:
        {"source": "engine track", "name": ..., "sha256": ...} from the tracker's report, or
        {"source": "assumed", "flame_version": "2020"} for datasets of the public trackers.
    """
    report = Path(dataset) / TRACKING_REPORT
    if report.is_file():
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            data = {}
        hm = data.get("head_model", {})
        if isinstance(hm, dict) and (hm.get("sha256") or hm.get("name")):
            return {"source": "engine track", "name": hm.get("name"), "sha256": hm.get("sha256")}
        if data.get("head_model_sha256"):
            return {"source": "engine track", "name": data.get("head_model_name"), "sha256": data["head_model_sha256"]}
    return {"source": "assumed", "flame_version": "2020"}


def check_tracking_model(dataset: Path, head: HeadModel) -> dict:
    """Compares the dataset's tracking model with the training model; warns on a mismatch.

    Returns:
        the :func:`dataset_head_model` record plus ``"matches"``: True, False or None (unknown),
        for ``avatar.json``.
    """
    info = dataset_head_model(dataset)
    if info["source"] == "engine track":
        matches = info.get("sha256") == head.sha256() if info.get("sha256") else None
        if matches is False:
            log.warning("%s was tracked with %r (sha256 %s…), training uses %r (%s…): its coefficients "
                        "belong to the other model; track the video again with this model",
                        dataset, info.get("name"), str(info.get("sha256"))[:12], head.name, head.sha256()[:12])
    else:
        version = flame_version(head)
        matches = None if version is None else version == "2020"
        if version == "2023":
            log.warning("%s comes from a public tracker (INSTA's metrical-tracker or IMavatar's DECA), "
                        "which fit FLAME 2020; training uses %r (FLAME 2023), whose bases differ: "
                        "use FLAME 2020's generic_model.pkl", dataset, head.name)
    return {**info, "matches": matches}
