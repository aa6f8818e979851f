"""``csrl train`` end to end: the run's config and presets, its stages, and the run folder they leave."""
