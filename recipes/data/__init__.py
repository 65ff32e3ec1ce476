"""Scripts that make the offline data sets of the benchmarks (spoken digits, moving digits)."""
