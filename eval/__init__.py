"""Evaluation: layout and image accuracy, CLIP scores, benchmark suites."""
