"""The pipeline stages: define -> build -> compress -> serve; each runnable as `python -m stages.X`."""
