"""Offline pipelines: data preparation and training (not part of the installed package)."""
