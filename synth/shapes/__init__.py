"""Training of scenewright's embedded shapes-world Stable Diffusion model (``python -m scenewright.synth.shapes.train``)."""
