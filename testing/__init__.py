"""Synthetic material and fixtures for the tests, the benchmarks (bench/) and the rehearsal
drill (rehearsal/): pre-encoded call media, drawn ID cards and liveness clips, photo-attack
clips, synthetic handwriting, the public face photos and the labelled face set.

Nothing in the product packages imports this package (an import-linter contract in
pyproject.toml keeps it so); only ``python -m app rehearse`` reaches it, through rehearsal/.
"""
