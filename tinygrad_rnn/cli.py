"""The `tinygrad-rnn` command (also `python -m tinygrad_rnn`). Each subcommand lives in its own module, which
provides NAME, HELP, add_arguments(parser) and run(args) -> exit code (or a list COMMANDS of objects with
those four names, for a module with several subcommands); heavy imports stay inside run()."""
import argparse
import base64
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import pathlib
import sys
from types import SimpleNamespace

from . import __version__
from .errors import UsageError

# one line per subcommand module; the layers above the engine (viz, benchmarks) may be named here
SUBCOMMANDS = [
    "tinygrad_rnn.demo",
    "viz.cli",                      # render
    "tinygrad_rnn.analysis.cli",    # analyze
    "tinygrad_rnn.train",           # train, sample, task
    "benchmarks.cli",               # bench
]
# Top-level packages of this project beside tinygrad_rnn. viz is installed with it; benchmarks only exists in a
# source checkout. Both names are taken on PyPI, so a package found under them may be another project's.
OWN_TOP_LEVEL = {"viz": "render", "benchmarks": "bench"}
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _recorded_hash(relative_path):
    """The sha256 that pip recorded for one of our installed files, or None (editable install, no RECORD)."""
    try:
        files = importlib.metadata.files("tinygrad_rnn") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix() == relative_path and f.hash is not None and f.hash.mode == "sha256":
            return f.hash.value
    return None


def foreign_package_problem(name):
    """Why the top-level package `name` found on sys.path is not this project's, or None when it is ours.

    Ours sits beside tinygrad_rnn (in a checkout or in site-packages) and, when pip recorded its files, its
    __init__.py still has the recorded hash: another distribution installed later (`pip install viz`)
    overwrites that file silently."""
    spec = importlib.util.find_spec(name)  # locates a top-level package without running it
    if spec is None or not spec.submodule_search_locations:
        return f"the package {name!r} is not installed"
    location = pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()
    if location != PROJECT_ROOT / name:
        return (f"the {name!r} found on the path ({location}) is another project's package, not tinygrad_rnn's "
                f"({PROJECT_ROOT / name}); uninstall it (pip uninstall {name}) or use a fresh virtual environment")
    recorded = _recorded_hash(f"{name}/__init__.py")
    if recorded is not None:
        actual = base64.urlsafe_b64encode(hashlib.sha256((location / "__init__.py").read_bytes()).digest())
        if actual.rstrip(b"=").decode() != recorded:
            return (f"{location} was overwritten by another distribution named {name!r}: run `pip uninstall "
                    f"{name}`, then reinstall tinygrad_rnn (pip install --force-reinstall)")
    return None


def _unavailable(command, message):
    """A stand-in subcommand that accepts any arguments and fails with `message` (one line, exit code 2)."""
    def run(args):
        raise UsageError(message)
    return SimpleNamespace(NAME=command, HELP=f"(unavailable: {message})", accepts_anything=True,
                           add_arguments=lambda parser: None, run=run)


def _subcommands(module_name):
    top = module_name.partition(".")[0]
    if top == "benchmarks" and importlib.util.find_spec(top) is None and (PROJECT_ROOT / top / "cli.py").is_file():
        # run from a checkout (an editable install maps only the installed packages): the harness is beside us
        sys.path.append(str(PROJECT_ROOT))
    if top in OWN_TOP_LEVEL:
        problem = foreign_package_problem(top)
        if problem and top == "benchmarks":
            problem = "the benchmarks run from a source checkout of tinygrad_rnn: `make bench` there"
        if problem:
            return [_unavailable(OWN_TOP_LEVEL[top], problem)]
    module = importlib.import_module(module_name)
    return getattr(module, "COMMANDS", [module])


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse's errors in one line on stderr (no usage block), exit code 2, like every other bad input.
    add_subparsers makes the subcommands' parsers of this class too (its parser_class default)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _get_values(self, action, arg_strings):
        # Python 3.11's argparse drops a '--' given as an option's own value (`--hidden=--`) and stores [],
        # which reached the work as a list (a TypeError traceback): it is the value, converted (and checked)
        # by the option's type like any other (later Pythons do the same)
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def _quiet_broken_pipe():
    """stdout's reader went away (`tinygrad-rnn ... | head`): point stdout at /dev/null so the interpreter's
    final flush cannot fail again, and exit quietly — the recipe of Python's signal module documentation."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def build_parser():
    parser = OneLineArgumentParser(prog="tinygrad-rnn", description="BPTT made visible: train, render, analyse "
                                     "and benchmark unrolled recurrent networks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        for command in _subcommands(module_name):
            p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
            command.add_arguments(p)
            p.set_defaults(run=command.run, accepts_anything=getattr(command, "accepts_anything", False))
    parser.subcommand_parsers = sub.choices  # {name: parser}: errors found after parsing name their subcommand
    return parser


def main(argv=None):
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()


def parse_arguments(parser, argv):
    """The namespace of `argv`, or argparse's one-line error (SystemExit 2) — arguments no subcommand takes
    included (`tinygrad-rnn --bogus` too, which printed the help and exited 0)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_anything", False):
        where = parser.subcommand_parsers[args.command] if args.command else parser
        where.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _main(argv):
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if args.command is None:  # a bare `tinygrad-rnn`: say what there is
        parser.print_help()
        return 0
    from .gradcheck import GradcheckError
    try:
        return args.run(args) or 0
    except BrokenPipeError:
        raise  # not bad input: main() exits quietly
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so nothing half-written is left
        print(f"tinygrad-rnn {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    except GradcheckError as e:  # a check the command runs failed: a result, not bad input
        print(f"tinygrad-rnn {args.command}: check failed: {e}", file=sys.stderr)
        return 1
    except (UsageError, ValueError, OSError, FloatingPointError, MemoryError) as e:
        # bad input (a missing or empty file, undecodable text, a foreign checkpoint, wrong shapes, a learning
        # rate that makes the loss overflow): one line, exit code 2, no traceback. UnicodeDecodeError and
        # ShapeError are ValueErrors.
        message = str(e) or type(e).__name__
        print(f"tinygrad-rnn {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
