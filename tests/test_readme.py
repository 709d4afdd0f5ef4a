"""The README works as printed: its Python runs, and every line of its shell blocks runs as a newcomer pastes it
after `make demo` and `source .venv/bin/activate` (in a fresh folder, one after another: `sample` reads the
checkpoint `train` wrote). Training lines run with `--steps 3` (or `analyze --adding` with `--train-steps 3`)
appended, argparse keeping the last value: the full runs take minutes and are what the README's table reports;
the table's settings are checked against the defaults instead. `make` lines run as `make -n` (the targets exist
and expand; this suite is what `make test` runs)."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
BIN = pathlib.Path(sys.executable).parent  # what `source .venv/bin/activate` puts first on PATH
# (subcommand, an option that makes it train) -> what cuts the training to a few updates
SHORTENED = {("train", None): ["--steps", "3"], ("task", None): ["--steps", "3"],
             ("analyze", "--adding"): ["--train-steps", "3"]}
OUTPUT_FLAGS = ("-o", "--save", "--plot")


def shell_lines():
    """(line, argv) for every command line of every ```bash block, in README order."""
    for block in re.findall(r"^```bash\n(.*?)^```", TEXT, flags=re.S | re.M):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                yield line.strip(), argv


def shortened(argv):
    return [arg for (command, trigger), extra in SHORTENED.items()
            if argv[1:2] == [command] and (trigger is None or trigger in argv) for arg in extra]


def section(title):
    return re.search(rf"^## {re.escape(title)}.*?\n(.*?)(?=^## )", TEXT, flags=re.S | re.M).group(1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def _run(argv, cwd):
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    if argv[0] == "tinygrad-rnn" and not (BIN / "tinygrad-rnn").exists():  # the package is not pip-installed
        argv = [sys.executable, "-m", "tinygrad_rnn", *argv[1:]]
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    elif argv[0] == "tinygrad-rnn":
        argv = [str(BIN / "tinygrad-rnn"), *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


LINES = list(shell_lines())


def test_the_readme_has_shell_commands():
    programs = {argv[0] for _, argv in LINES}
    assert {"make", "source", "tinygrad-rnn"} <= programs, programs
    assert programs <= {"make", "source", "tinygrad-rnn"}, f"a README command this test cannot run: {programs}"


@pytest.mark.parametrize("line,argv", LINES, ids=[line for line, _ in LINES])
def test_shell_line_runs_as_printed(line, argv, workdir):
    if argv[0] == "source":
        assert argv[1:] == [".venv/bin/activate"]
        assert (ROOT / ".venv" / "bin" / "activate").exists() or not (ROOT / ".venv").exists()
        return
    if argv[0] == "make":
        done = subprocess.run(["make", "-n", "-C", str(ROOT), *argv[1:]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return
    done = _run(argv + shortened(argv), workdir)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{line}\n{done.stdout}\n{done.stderr}"
    for flag, path in zip(argv, argv[1:]):
        if flag in OUTPUT_FLAGS:
            assert (workdir / path).exists(), f"{line}: wrote no {path}"
    measured = re.search(r"measured: rate ([\d.]+) per step -> (\w+)", line)
    if measured:  # the comment's numbers are what the command prints, rounded as the comment rounds them
        rate, verdict = re.search(r"fitted rate (\S+) per step → (\w+)", done.stdout).groups()
        decimals = len(measured.group(1).partition(".")[2])
        assert (f"{float(rate):.{decimals}f}", verdict) == measured.groups()


def test_readme_example_runs():
    block = re.search(r"## The idea in 16 lines\n\n```python\n(.*?)```", TEXT, re.S).group(1)
    assert len(block.strip().splitlines()) <= 16
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    tape, W = namespace["tape"], namespace["W"]
    assert [c.name for c in tape.copies(W)] == ["W(1)", "W(2)", "W(3)", "W(4)"]


def test_the_two_commands_and_where_the_command_lives():
    two = section("Two commands")
    assert "make demo" in two and "make test" in two
    assert "source .venv/bin/activate" in two and ".venv/bin/tinygrad-rnn" in two
    makefile = (ROOT / "Makefile").read_text()
    assert "source .venv/bin/activate" in makefile  # `make demo` ends by saying so too


def test_the_notebook_is_linked():
    assert "(notebooks/bptt.ipynb)" in TEXT and (ROOT / "notebooks" / "bptt.ipynb").exists()


def _defaults(command):
    from tinygrad_rnn.cli import build_parser
    parser = build_parser()
    return {**vars(parser.parse_args([command] + (["adding"] if command == "task" else [])))}


def test_the_training_table_states_the_defaults_of_the_shown_commands():
    table = section("Training real models")
    train, task = _defaults("train"), _defaults("task")
    char_lm = re.search(r"char LM, vanilla RNN \(d = (\d+), windows of (\d+), batch (\d+), Adam ([\d.e-]+), "
                        r"(\d+) updates\)", table).groups()
    assert char_lm[:3] + char_lm[4:] == (str(train["hidden"]), str(train["seq"]), str(train["batch"]), "1000")
    assert float(char_lm[3]) == train["lr"]
    adding = re.search(r"adding problem T = (\d+), vanilla RNN \(d = (\d+), batch (\d+), ([\d,]+) updates\)",
                       table).groups()
    assert adding[:3] == ("50", str(task["hidden"]), str(task["batch"]))
    assert int(adding[3].replace(",", "")) == task["steps"]
    assert f"default {train['threads']}" in table or f"--threads {train['threads']}" in table


def _setup_cfg():
    import configparser
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config


def _names(requirements):
    return {re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower() for line in requirements.split("\n") if line.strip()}


def test_what_each_make_target_installs_is_what_the_readme_says():
    config = _setup_cfg()
    core = _names(config["options"]["install_requires"])
    said = re.search(r"It installs only what the demo\s+needs: ([\w, ]+)\.", section("Two commands")).group(1)
    assert core == {name.strip() for name in said.split(",")} == {"numpy", "graphviz", "matplotlib", "tqdm",
                                                                 "threadpoolctl"}
    extras = {name: _names(value) for name, value in config["options.extras_require"].items()}
    assert {"pytest", "hypothesis", "nbclient", "ipykernel", "nbformat"} <= extras["test"]
    assert {"jax", "autograd", "mygrad", "scipy"} == extras["peers"] and "torch" in extras["bench"]
    rules = dict(re.findall(r"^\$\((\w+)\):.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M))
    assert "-e .\n" in rules["CORE"] and "[" not in rules["CORE"]  # make demo: no extras
    assert "'.[test,bench]'" in rules["TESTS"] and "peers" not in rules["TESTS"]  # never in make test / CI
    assert "peers" in rules["BENCH"]


def test_packaging_metadata():
    config = _setup_cfg()
    included = config["options.packages.find"]["include"].split()
    assert "benchmarks" not in " ".join(included)  # a PyPI distribution of that name exists
    assert (ROOT / "LICENSE").read_text().startswith("MIT License") and config["metadata"]["license"] == "MIT"
    classifiers = config["metadata"]["classifiers"]
    assert "License :: OSI Approved :: MIT License" in classifiers
    lowest = re.search(r">=3\.(\d+)", config["options"]["python_requires"]).group(1)
    assert f"Programming Language :: Python :: 3.{lowest}\n" in classifiers + "\n"
    assert (ROOT / "tinygrad_rnn" / "py.typed").exists()
    assert "py.typed" in config["options.package_data"]["tinygrad_rnn"]
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def _table_rows(text, after):
    """The rows of the first markdown table after the line starting with `after`: {first cell: [cells]}."""
    rows, started = {}, False
    for line in text[text.index(after):].splitlines():
        if line.startswith("|"):
            started = True
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if not set(cells[0]) <= set("-:"):
                rows[cells[0]] = cells[1:]
        elif started:
            break
    return rows


def test_the_benchmark_table_is_the_committed_runs():
    """The README's benchmark table is the committed report's short table (less its two-ways column), and the
    README names that run's git commit: numbers a reader sees come from the run it points to."""
    report = (ROOT / "benchmarks" / "results" / "bptt.md").read_text(encoding="utf-8")
    ours = _table_rows(section("Benchmarks"), "| (B,T,d,V)")
    theirs = _table_rows(report, "## In short")
    assert ours and set(ours) == set(theirs)
    for row, cells in theirs.items():
        assert ours[row] == cells[:-1], row
    commit = re.search(r"\(git (\w+),", report).group(1)
    assert f"git {commit}," in section("Benchmarks")


def test_the_second_hosts_figures_are_its_reports():
    """The trust bullet quotes the second host's run: the engine ÷ hoisted numpy on the batched rows and the
    count of cells where its two ways agree, read from that report."""
    report = (ROOT / "benchmarks" / "results" / "second-host" / "bptt.md").read_text(encoding="utf-8")
    rows = _table_rows(report, "## In short")  # (its heading row is the key "(B,T,d,V)")
    column = rows["(B,T,d,V)"].index("engine ÷ hoisted")
    batched = " / ".join(rows[row][column] for row in ("(32,50,128,65)", "(32,100,512,65)", "(64,50,1024,65)"))
    assert f"{batched} the hoisted" in section("Benchmarks")
    agreed = re.search(r"agree within 5 % on (\d+) of 66 cells", report).group(1)
    assert f"agreed on only {agreed} of 66 cells" in section("Benchmarks")
