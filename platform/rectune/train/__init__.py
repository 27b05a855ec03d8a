"""Training: the step and epoch loop (``core``), metrics, checkpoints, the Ray Train worker loop
(``worker``) and the ``rectune train`` / ``rectune predict`` runners (``run``, ``predict``)."""
