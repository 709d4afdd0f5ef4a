"""`python -m tinygrad_rnn ...` is the `tinygrad-rnn` command (for when the console script is not on PATH)."""
import sys

from .cli import main

sys.exit(main())
