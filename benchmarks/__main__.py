"""`python -m benchmarks`: the benchmark command (the same options as `tinygrad-rnn bench`)."""
import sys

from .cli import main

sys.exit(main())
