"""multidiff.modalities."""
