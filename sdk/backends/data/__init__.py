"""Data steps (dataset, synth) and the readers of data files (preferences)."""
