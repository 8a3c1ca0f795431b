"""Speed and memory benchmarks behind ``linearlab bench <name>`` (not tests: they print ratios)."""
