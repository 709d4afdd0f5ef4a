"""Checkpoints read defensively and written without losing data (issue 16, "Checkpoints"): headers checked
before anything is decompressed (memory measured on a crafted file), complex or non-finite weights refused,
the target's mode kept, temp files of killed saves cleaned and never read, other kinds of file named as
such, and a failing save that names its target."""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile

import numpy as np
import pytest

from tinygrad_rnn import nn
from tinygrad_rnn.nn import checkpoint as ck

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIT_FLIPS = 400  # flipped copies per fuzzed checkpoint (issue 16 flipped 408)
KILLS = 5        # kill -9 during real saves


def _zip_of(path, members, compress=zipfile.ZIP_STORED):
    """An .npz written member by member: {name: array or (header dict, data bytes, repeat)}."""
    with zipfile.ZipFile(path, "w", compression=compress, compresslevel=1 if compress else None) as archive:
        for name, value in members.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as f:
                if isinstance(value, np.ndarray):
                    np.lib.format.write_array(f, value)
                else:
                    header, chunk, repeat = value
                    np.lib.format.write_array_header_1_0(f, header)
                    for _ in range(repeat):
                        f.write(chunk)
    return path


def _bomb(path, name="W", side=6000):
    """A deflated member of side² zero float64s: ~290 MB once decompressed, ~0.3 MB on disk."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (side, side)}
    return _zip_of(path, {name: (header, bytes(8 * side), side)}, compress=zipfile.ZIP_DEFLATED)


def _peak_rss_mib(code):
    """Peak resident memory (MiB) of a fresh interpreter that runs `code` (after imports), and its output."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from tinygrad_rnn import nn
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
        {body}
        except Exception as e:
            print(type(e).__name__, e)
        print("RSS", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr
    *lines, rss = out.stdout.strip().splitlines()
    return float(rss.split()[1]), "\n".join(lines)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return _bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")


def test_a_crafted_small_file_cannot_make_load_allocate(bomb):
    assert os.path.getsize(bomb) < 2e6
    for call in (f"nn.RNN(3, 4, 5).load({str(bomb)!r})", f"nn.load_npz({str(bomb)!r})"):
        grown, message = _peak_rss_mib(call)
        assert "CheckpointError" in message and "would expand from" in message and "zip bomb" in message
        assert grown < 40, f"{call} grew the process by {grown:.0f} MiB before refusing"  # 290 MB decompressed


def test_names_and_shapes_are_checked_before_any_array_is_decompressed(tmp_path, monkeypatch):
    big = nn.RNN(3, 40, 5, seed=1)
    big.save(tmp_path / "big.npz", metadata={"hidden": 40})
    reads = []
    original = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda f, **kw: reads.append(f.name) or original(f, **kw))
    with pytest.raises(nn.CheckpointError) as info:
        nn.RNN(3, 4, 5, seed=0).load(tmp_path / "big.npz")
    assert "'W' has shape (40, 40) in the state dict but (4, 4) in the model" in str(info.value)
    assert reads == ["__metadata__.npy"]  # only the small JSON member, whose header was checked first


def test_a_header_that_lies_about_its_size_is_a_corrupted_file(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)}  # 4 MB declared, 16 B held
    path = _zip_of(tmp_path / "lie.npz", {"W": (header, bytes(16), 1)})
    with pytest.raises(nn.CheckpointError, match=r"not a readable checkpoint \(member 'W'\).*declares"):
        nn.load_npz(path)


def test_model_is_unchanged_when_the_checkpoint_does_not_fit(tmp_path):
    small, big = nn.RNN(3, 4, 5, seed=0), nn.RNN(3, 6, 5, seed=1)
    big.save(tmp_path / "big.npz")
    before = small.state_dict()
    with pytest.raises(nn.CheckpointError, match=r"does not fit this RNN.*'W' has shape \(6, 6\)"):
        small.load(tmp_path / "big.npz")
    for name, value in small.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("bad,match", [(np.full((4, 4), 1 + 2j), r"'W' has dtype complex128 \(complex\)"),
                                       (np.full((4, 4), "x"), r"'W' is a text array"),
                                       (np.ones((4, 4), np.int64), r"'W' has dtype int64 \(not a real float")])
def test_complex_or_non_float_weights_are_an_error(tmp_path, bad, match):
    model = nn.RNN(3, 4, 5, seed=0)
    state = model.state_dict()
    state["W"] = bad
    path = _zip_of(tmp_path / "bad.npz", state)
    before = model.W.data.copy()
    with pytest.raises(nn.CheckpointError, match=match):
        model.load(path)
    np.testing.assert_array_equal(model.W.data, before)


def test_non_finite_weights_are_an_error_on_load_and_refused_on_save(tmp_path):
    model = nn.RNN(3, 4, 5, seed=0)
    state = model.state_dict()
    state["V"][1, 2] = np.nan
    state["V"][3, 0] = np.inf
    path = _zip_of(tmp_path / "nan.npz", state)
    with pytest.raises(nn.CheckpointError, match=r"'V' has 2 non-finite values \(first at \(1, 2\): nan\)"):
        model.load(path)
    good = tmp_path / "good.npz"
    model.save(good)
    original = good.read_bytes()
    model.V.data = state["V"]
    with pytest.raises(ValueError, match=r"parameter 'V' \(4, 5\) has 2 non-finite values; nothing was written"):
        model.save(good)
    assert good.read_bytes() == original


def test_save_keeps_the_target_files_mode(tmp_path):
    model, path = nn.Linear(2, 3, seed=0), tmp_path / "m.npz"
    umask = os.umask(0o022)
    os.umask(umask)
    model.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    for mode in (0o600, 0o640, 0o444):
        os.chmod(path, mode)
        model.save(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == mode


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_save_removes_temp_files_of_dead_writers_only(tmp_path):
    path = tmp_path / "m.npz"
    stale = tmp_path / f".tmp-m.npz.{_dead_pid()}.abcd1234"
    alive = tmp_path / f".tmp-m.npz.{os.getppid()}.efgh5678"    # a save still running in another process
    other = tmp_path / f".tmp-other.npz.{_dead_pid()}.ijkl9012"  # another target's: not ours to remove
    old = tmp_path / f".tmp-m.npz.{os.getppid()}.mnop3456"       # alive pid, but a day old: a reused pid
    for f in (stale, alive, other, old):
        f.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    nn.Linear(2, 3, seed=0).save(path)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(["m.npz", alive.name, other.name])


def test_a_killed_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    path = tmp_path / "m.npz"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, numpy as np
        from tinygrad_rnn import nn
        def slow_savez(f, **arrays):
            f.write(b"PK partial checkpoint")
            f.flush()
            time.sleep(60)
        np.savez = slow_savez
        nn.Linear(2, 3).save({str(path)!r})
    """)], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    try:
        for _ in range(200):
            temps = [f for f in tmp_path.iterdir() if f.name.startswith(".tmp-m.npz.")]
            if temps:
                break
            time.sleep(0.05)
        assert temps, "the writer never started its temporary file"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait()
    assert temps[0].exists() and not path.exists()
    with pytest.raises(nn.CheckpointError, match="unfinished temporary file of a save"):
        nn.Linear(2, 3).load(temps[0])                          # never read one
    nn.Linear(2, 3, seed=0).save(path)
    assert [f.name for f in tmp_path.iterdir()] == ["m.npz"]


def _png(path):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    plt.imsave(path, np.zeros((4, 4)), format="png")
    return path


@pytest.mark.parametrize("make,shown", [
    (lambda p: _png(p), "b'\\x89PNG\\r"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(500)), "a file starting with"),
    (lambda p: p.write_text("U = [[1, 2], [3, 4]]\n"), "b'U = [[1,"),
    (lambda p: np.save(p, np.ones(3)) or os.replace(str(p) + ".npy", p), "a single .npy array"),
    (lambda p: p.write_bytes(b""), "b''"),
])
def test_files_of_another_kind_are_not_a_tinygrad_rnn_checkpoint(tmp_path, make, shown):
    path = tmp_path / "thing.npz"
    make(path)
    with pytest.raises(nn.CheckpointError) as info:
        nn.RNN(3, 4, 5).load(path)
    message = str(info.value)
    assert "is not a tinygrad_rnn checkpoint" in message and "thing.npz" in message and shown in message
    assert "allow_pickle" not in message


def test_a_zip_of_other_files_is_not_a_tinygrad_rnn_checkpoint(tmp_path):
    path = tmp_path / "docs.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(nn.CheckpointError, match=r"not a tinygrad_rnn checkpoint \(a zip archive with members "
                                                 r"that are not .npy arrays \['readme.txt'\]\)"):
        nn.load_npz(path)


def test_a_failing_save_names_the_target_not_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    nn.Linear(2, 3, seed=0).save(path)
    good = path.read_bytes()

    def disk_full(f, **arrays):
        f.write(b"PK half")
        raise OSError(28, "No space left on device", f.name)
    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError) as info:
        nn.Linear(2, 3, seed=1).save(path)
    assert info.value.errno == 28 and str(path) in str(info.value) and ".tmp-" not in str(info.value)
    assert "No space left on device" in str(info.value) and info.value.__cause__ is None
    assert path.read_bytes() == good and [f.name for f in tmp_path.iterdir()] == ["m.npz"]
    monkeypatch.undo()
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError, match="adir.*is a directory"):
        nn.Linear(2, 3).save(tmp_path / "adir")


def test_round_trip_of_an_ordinary_checkpoint_is_exact(tmp_path):
    a, b = nn.RNN(3, 4, 5, seed=0, cell="lstm"), nn.RNN(3, 4, 5, seed=1, cell="lstm")
    assert b.load(a.save(tmp_path / "a.npz", metadata={"vocab": ["h", "e"], "hidden": 4})) == \
        {"vocab": ["h", "e"], "hidden": 4}
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    header = ck.read_checkpoint(tmp_path / "a.npz")
    assert header.members["V"] == ((4, 5), np.dtype("float32")) and header.metadata["hidden"] == 4


def _bit_flips(raw, n, rng):
    """`n` copies of `raw`, each with one random bit flipped (positions uniform over the file)."""
    return [raw[:i] + bytes([raw[i] ^ (1 << int(rng.integers(8)))]) + raw[i + 1:]
            for i in rng.integers(0, len(raw), n)]


def test_bit_flips_and_truncations_load_exactly_or_fail_cleanly(tmp_path):
    # every damaged copy either loads the very same weights (the flip hit a field nothing reads) or raises
    # CheckpointError with the model untouched — no other exception, no numpy warning
    model = nn.RNN(4, 6, 4, seed=0)
    model.save(tmp_path / "m.npz", metadata={"hidden": 6})
    raw = (tmp_path / "m.npz").read_bytes()
    rng = np.random.default_rng(0)
    damaged = _bit_flips(raw, BIT_FLIPS, rng) + [raw[:n] for n in range(0, len(raw), 29)]
    failures = 0
    for i, data in enumerate(damaged):
        (tmp_path / "x.npz").write_bytes(data)
        target = nn.RNN(4, 6, 4, seed=1)
        before = target.state_dict()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                target.load(tmp_path / "x.npz")
                expected = model.state_dict()
            except nn.CheckpointError:
                failures, expected = failures + 1, before
        for name, value in target.state_dict().items():
            np.testing.assert_array_equal(value, expected[name], err_msg=f"case {i}, {name}")
    assert failures > 0.7 * len(damaged)


def test_check_shapes_lets_a_loader_refuse_metadata_before_building_the_model(tmp_path):
    nn.RNN(3, 4, 3, seed=0).save(tmp_path / "m.npz", metadata={"hidden": 10 ** 6, "vocab": 3})
    header = ck.read_checkpoint(tmp_path / "m.npz")
    meta = header.metadata
    with pytest.raises(nn.CheckpointError, match=r"does not hold the model its metadata describes: 'V' is "
                                                 r"\(4, 3\), not \(1000000, 3\)"):
        header.check_shapes({"V": (meta["hidden"], meta["vocab"])})
    with pytest.raises(nn.CheckpointError, match="no member 'weight'"):
        header.check_shapes({"weight": (4, 3)}, what="a Linear")
    full = {name: shape for name, (shape, dtype) in header.members.items()}
    header.check_shapes(full)
    with pytest.raises(nn.CheckpointError, match=r"unexpected members \['U', 'b', 'c'\]"):
        header.check_shapes({"V": (4, 3), "W": (4, 4)})  # a member the model has no place for: another model's


def test_bit_flips_of_a_train_checkpoint_load_exactly_or_fail_in_one_line(tmp_path, capsys):
    # the command line's path (`sample --load`: metadata checked, then the model built from it): 400 flipped
    # copies of a `train --save` checkpoint each load the very model or raise CheckpointError — never
    # another exception or a numpy warning; every 10th also through the command: exit 0, or one line, exit 2
    from test_cli_errors import run_cli
    from tinygrad_rnn.cli import main
    from tinygrad_rnn.train import load_char_lm
    good = tmp_path / "ck.npz"
    assert main(["train", "--steps", "1", "--hidden", "4", "--seq", "8", "--no-progress", "--save", str(good),
                 "--plot", str(tmp_path / "ck.png")]) == 0
    capsys.readouterr()
    original, vocab, meta = load_char_lm(good)
    raw = good.read_bytes()
    refused, loaded, outcomes = 0, 0, []
    for i, data in enumerate(_bit_flips(raw, BIT_FLIPS, np.random.default_rng(1))):
        path = tmp_path / "x.npz"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                model, vocab2, meta2 = load_char_lm(path)
            except nn.CheckpointError as e:
                refused += 1
                assert "x.npz" in str(e), str(e)
            else:
                loaded += 1
                assert vocab2.tokens == vocab.tokens and meta2 == meta, f"flip {i}"
                for (name, p), q in zip(original.named_parameters(), model.parameters()):
                    np.testing.assert_array_equal(q.data, p.data, err_msg=f"flip {i}, {name}")
        if i % 10 == 0:
            code, err = run_cli(capsys, "sample", "--load", path, "--n", "3")
            lines = err.strip().splitlines()
            outcomes.append(code)
            assert (code == 0 and not lines) or (code == 2 and len(lines) == 1 and "Traceback" not in err), err
    assert refused > 0.7 * BIT_FLIPS and refused + loaded == BIT_FLIPS and 2 in outcomes


def test_kill_9_during_real_saves_leaves_the_old_file_loadable_and_the_next_save_cleans_up(tmp_path):
    # real np.savez writes (no stub), a writer saving two models in turn onto one path, killed (SIGKILL) at
    # random moments: after each kill the path holds one of the two models whole, and the next writer's first
    # save removes the temporary file the killed one left
    path, sizes = tmp_path / "m.npz", (300, 400, 300)
    models = [nn.RNN(*sizes, seed=seed) for seed in (0, 1)]
    script = textwrap.dedent(f"""
        import sys
        from tinygrad_rnn import nn
        models = [nn.RNN(*{sizes}, seed=seed) for seed in (0, 1)]
        models[0].save({str(path)!r})
        print("saved", flush=True)
        while True:
            for model in models:
                model.save({str(path)!r})
    """)
    rng, hits = np.random.default_rng(0), 0
    left_by_the_killed = []
    for kill in range(KILLS):
        writer = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": REPO})
        try:
            assert writer.stdout.readline() == "saved\n"
            assert not any(f.exists() for f in left_by_the_killed), "the next save kept a dead writer's temp"
            time.sleep(float(rng.uniform(0.05, 0.4)))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
            writer.stdout.close()
        left_by_the_killed = [f for f in tmp_path.iterdir() if f.name.startswith(".tmp-m.npz.")]
        hits += bool(left_by_the_killed)
        survivor = nn.RNN(*sizes, seed=2)
        survivor.load(path)  # the old file (or the new one) whole, never a partial one
        assert any(all(np.array_equal(p.data, q.data) for p, q in zip(survivor.parameters(), m.parameters()))
                   for m in models), f"kill {kill}: the checkpoint is neither model"
    assert hits >= 1, "no kill landed inside a save"
    models[0].save(path)
    assert [f.name for f in tmp_path.iterdir()] == ["m.npz"]
