"""The shapes world in one package: procedural scenes (:mod:`.world`), their exact detector (:mod:`.detector`),
the trainer of the embedded Stable Diffusion model (:mod:`.train`, ``python -m scenewright.synth.shapes.train``),
its shipped weights (``model/``, a diffusers folder) and its model card (``MODEL_CARD.md``)."""
