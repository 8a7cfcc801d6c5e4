"""Jinja2 templates that prompt an LLM for layouts (shipped as package data)."""
