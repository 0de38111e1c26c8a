"""The benchmark suite: every speed and memory claim, measured as a ratio within one run."""
