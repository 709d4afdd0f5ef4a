"""Benchmarks: one BPTT training step of the lecture RNN, tinygrad_rnn against PyTorch, hand-written numpy and
(when installed) jax, HIPS autograd and MyGrad.

`benchmarks.bench_bptt` is the harness (importable); `benchmarks.cli` is the command, run as
`python -m benchmarks` or `tinygrad-rnn bench`; `implementations` and `peers` are the steps measured,
`measure` the timing and memory, `report` the files.
"""
