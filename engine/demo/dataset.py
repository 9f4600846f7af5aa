"""The main job's dataset: the Cycles renders and the subject's exact parameters in the INSTA layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.errors import DemoError


def write_dataset(root: Path, subject: Path, renders: Path) -> Path:
    """The Cycles renders + the subject's exact parameters in the INSTA layout (engine.data.insta).

    ``images/NNNNN.png`` get the RGB of the renders (straight alpha), ``alpha/NNNNN.png`` their
    alpha; the tracked parameters and cameras are written exactly (``flame/*``, transforms JSON).
    """
    from engine.data.insta import write_insta
    from engine.data.sequence import Sequence
    from engine.io.images import read_image

    with np.load(Path(subject) / "tracking.npz", allow_pickle=False) as z:
        tr = {k: z[k] for k in z.files}
    names = [str(n) for n in tr["frame_names"]]
    T = len(names)
    images, masks = [], []
    for n in names:
        rgba = read_image(Path(renders) / f"{n}.png")
        if rgba.shape[-1] != 4:
            raise DemoError(f"{renders / (n + '.png')}: expected an RGBA render, found {rgba.shape[-1]} channels")
        images.append((rgba[..., :3] * 255 + 0.5).astype(np.uint8))
        masks.append((rgba[..., 3] * 255 + 0.5).astype(np.uint8))
    root = Path(root)
    seq = Sequence(
        root=root, frame_names=names, shape=torch.as_tensor(tr["shape"]), expr=torch.as_tensor(tr["expr"]),
        pose=torch.as_tensor(tr["pose"]), translation=torch.as_tensor(tr["translation"]),
        viewmats=torch.as_tensor(tr["viewmat"]), Ks=torch.as_tensor(tr["K"]),
        width=int(tr["width"]), height=int(tr["height"]),
        image_paths=[root / "images" / f"{n}.png" for n in names],
        mask_paths=[root / "alpha" / f"{n}.png" for n in names],
        split=["train" if s == 0 else "test" for s in tr["split"]])
    write_insta(root, seq, images, masks)
    return root
