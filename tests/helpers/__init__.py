"""Test helpers: generated images (:mod:`.images`), the reference packages' models
(:mod:`.references`), seeded random backbone weights (:mod:`.weights`) and small replicas of
the human-judgment datasets (:mod:`.eval_replicas`). Import them as ``tests.helpers.<name>``."""
