"""Benchmarks a user runs: each rule's step against backprop and a bare PyTorch loop
(:mod:`.steps`), and batched runs against separate ones (:mod:`.batched`)."""
