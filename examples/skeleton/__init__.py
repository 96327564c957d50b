"""The HaLP skeleton pipeline behind ``examples/skeleton_moco.py``: recipes and the command line (``config``,
``cli``, ``commands``), datasets (``data``: one adapter per raw format, a registry of dataset names, layouts,
pre-normalization, augmentations, loading), models (``models``: encoders, MoCo) and training (``training``:
pretraining, evaluation protocols, checkpoints, run outputs). The data formats and protocols it implements are
described in ``docs/data.md`` and ``docs/protocols.md``.
"""
