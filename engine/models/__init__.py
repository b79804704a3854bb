"""The networks and their weights: FastPitch 1.1, HiFi-GAN, pitch transforms, checkpoint
loading and saving, and :class:`~engine.models.voice.Voice` (the loaded set one engine speaks
with). Nothing here schedules or streams."""
