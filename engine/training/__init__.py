"""Training a voice: the teacher corpus, pitch extraction, the aligner, the training losses,
batching, the optimiser, checkpoint shards and the trainer behind ``fpstream corpus build`` and
``fpstream train``."""
