"""Video → tracked dataset: the built-in FLAME tracker (``python -m engine track``, issue 13).

Stages: read frames (:mod:`.video`), detect the face, its 478 MediaPipe landmarks and a person
mask (:mod:`.detect`), one fixed square crop (:mod:`.crop`), a batched landmark fit of FLAME
(:mod:`.fit`, with the landmark embedding of :mod:`.embedding`), a photometric refinement
against a coarse avatar (:mod:`.photometric`), head/hair/neck masks (:mod:`.masks`), and the
INSTA dataset with ``tracking/`` (:mod:`.pipeline`, :mod:`.report`).
"""
