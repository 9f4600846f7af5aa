"""Reading a tracked dataset folder whatever its layout (INSTA or IMavatar/NerFace)."""

from __future__ import annotations

from pathlib import Path

from engine.data.imavatar import PARAMS_JSON, find_imavatar_jsons, read_imavatar
from engine.data.insta import TRAIN_JSON, read_insta
from engine.data.sequence import Sequence
from engine.errors import DatasetError


def load_sequence(path: str | Path) -> Sequence:
    """Reads a tracked dataset folder, detecting its layout.

    - INSTA (FATE's modified INSTA script): ``transforms_train.json`` in the folder →
      :func:`engine.data.insta.read_insta`.
    - IMavatar / NerFace (DECA pipeline): ``flame_params.json`` in the folder or in
      ``*_train`` / ``*_test`` subfolders → :func:`engine.data.read_imavatar`.

    Args:
        path: the dataset folder, or one of its json files.
    Raises:
        DatasetError: neither layout found (the message lists what was looked for), or
            the reader's own errors.
    """
    p = Path(path)
    if p.is_file():
        if p.name.startswith("transforms_") and p.suffix == ".json":
            return read_insta(p.parent)
        if p.name.startswith("flame_params") and p.suffix == ".json":
            return read_imavatar(p.parent)
        raise DatasetError(f"{p}: not a dataset json (expected transforms_train.json or "
                           "flame_params.json)")
    if not p.is_dir():
        raise DatasetError(f"{p}: dataset folder not found")
    if (p / TRAIN_JSON).is_file():
        return read_insta(p)
    if find_imavatar_jsons(p):
        return read_imavatar(p)
    raise DatasetError(
        f"{p}: no dataset found: expected {TRAIN_JSON} (INSTA layout) or "
        f"{PARAMS_JSON} in the folder or in *_train/*_test subfolders (IMavatar layout)")
