"""Tracked monocular datasets: readers, the INSTA writer, and the :class:`Sequence` they share.

- :func:`load_sequence` detects the layout (INSTA or IMavatar/NerFace) and reads it.
- ``insta``: :func:`read_insta`, :func:`write_insta` (FATE's modified INSTA layout).
- ``imavatar``: :func:`read_imavatar` (IMavatar / NerFace DECA layout).

Every reader returns a :class:`Sequence` in engine conventions (FLAME axis-angle pose,
OpenCV world→camera ``viewmats``, pixel ``Ks``) and raises
:class:`~engine.errors.DatasetError` naming the file and field of any defect.
"""

from engine.data.imavatar import read_imavatar
from engine.data.insta import read_insta, write_insta
from engine.data.load import load_sequence
from engine.data.sequence import Sequence

__all__ = ["Sequence", "load_sequence", "read_insta", "write_insta", "read_imavatar"]
