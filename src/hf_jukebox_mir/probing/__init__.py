"""Probing: the JukeMIR protocol (tasks, datasets, metrics, probe training, grid search, reports)."""
