"""scenewright's agent: the CLI and Python API that chain plan -> check -> synthesize -> verify."""
