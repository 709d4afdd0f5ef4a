"""The `tinygrad-rnn` command. Each subcommand lives in its own module, which provides
NAME, HELP, add_arguments(parser) and run(args) -> exit code (or a list COMMANDS of objects with
those four names, for a module with several subcommands); heavy imports stay inside run()."""
import argparse
import importlib
import sys

from .errors import UsageError  # noqa: F401  (subcommands import it from errors; kept here for callers)

# one line per subcommand module; the layers above the engine (viz, benchmarks) may be named here
SUBCOMMANDS = [
    "tinygrad_rnn.demo",
    "viz.cli",                      # render
    "tinygrad_rnn.analysis.cli",    # analyze
    "tinygrad_rnn.train",           # train, sample, task
    "benchmarks.cli",               # bench
]


def build_parser():
    parser = argparse.ArgumentParser(prog="tinygrad-rnn", description="BPTT made visible: train, render, analyse "
                                     "and benchmark unrolled recurrent networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        for command in getattr(module, "COMMANDS", [module]):
            p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
            command.add_arguments(p)
            p.set_defaults(run=command.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (UsageError, ValueError, OSError) as e:
        # bad input (a missing or empty file, undecodable text, a foreign checkpoint, wrong shapes):
        # one line, exit code 2, no traceback. UnicodeDecodeError and ShapeError are ValueErrors.
        print(f"tinygrad-rnn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
