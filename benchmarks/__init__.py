"""Benchmarks: one BPTT training step of the lecture RNN, tinygrad_rnn against PyTorch and numpy floors.

`benchmarks.bench_bptt` is the harness (importable); `benchmarks.cli` is `tinygrad-rnn bench`.
"""
