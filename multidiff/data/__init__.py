"""multidiff.data."""
