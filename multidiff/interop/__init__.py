"""multidiff.interop."""
