"""Synthesis stage: training-free attention control on Stable Diffusion and GLIGEN."""
