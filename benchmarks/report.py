"""The results of `run_benchmark` as files: a markdown table, a JSON dump and a PNG chart."""
import json
from pathlib import Path

import numpy as np

from .implementations import BY_KEY

def _ms(seconds):
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _threads(n):
    return "1 thread" if n == 1 else f"{n} threads"


def _mib(n):
    return "—" if n is None else f"{n / 2 ** 20:.3g}"


def markdown(results):
    """The results as markdown: header (machine, versions, BLAS, threads), times, ratios, memory, overhead."""
    env, rows = results["environment"], results["rows"]
    keys = list(results["implementations"])
    blas, tor = env.get("blas", {}), env.get("torch")
    lines = ["# One BPTT training step: tinygrad_rnn vs PyTorch autograd, hand-written numpy and other autodiff "
             "libraries", ""]
    lines.append(f"- {env['date']} · {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB · {env['platform']}")
    lines.append(f"- Python {env['python']}, numpy {env['numpy']}, tinygrad_rnn {env['tinygrad_rnn']}"
                 f" (git {env['commit']}, engine sources sha1 {env.get('engine_sha1')})"
                 + (f", torch {tor['version']}" if tor else ", torch not installed")
                 + "".join(f", {name} {v}" for name, v in env.get("peers", {}).items()))
    lines.append(f"- numpy BLAS (threadpoolctl): {blas.get('library')} {blas.get('version')}, kernel "
                 f"**{blas.get('kernel')}**, {_threads(blas.get('threads'))}"
                 + (" (set by `--threads` through threadpoolctl)" if results["settings"].get("threads") else "")
                 + "; sgemm 1024³ "
                 f"{env['sgemm_gflops']:.0f} GFLOP/s (best seen during the run)")
    if tor:
        lines.append(f"- torch: {tor['blas']}; `torch.set_num_threads({tor['threads']})` = numpy's BLAS thread "
                     f"count from threadpoolctl (interop threads {tor['interop_threads']})")
    if "jax_scan" in keys:
        lines.append("- jax: XLA's own CPU thread pool (one thread per core; `--threads` does not reach it); the "
                     "first call compiles and is part of the warm-up, not of the timing")
    openblas = env["openblas_env"]
    lines.append("- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: " + (
        "unset (run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`)" if not openblas else
        f"**set to {openblas}** — numpy's BLAS was forced to that kernel; these are not this CPU's best times"))
    malloc = env.get("malloc")
    lines.append("- glibc malloc: " + (
        f"trim threshold {malloc['M_TRIM_THRESHOLD'] >> 20} MiB and mmap threshold "
        f"{malloc['M_MMAP_THRESHOLD'] >> 20} MiB fixed in every timing process (`--malloc steady`), so a step's "
        "page faults do not depend on what the process ran before" if malloc else
        "as it is (`--malloc default`, or not glibc): a step may page-fault in one process and not in another"))
    s = results["settings"]
    lines.append(f"- One step = forward + ∂L/∂(U, W, b, V, c), float32, one-hot inputs, L = Σ_t Σ_batch CE. "
                 f"Median (min) ms over ≥{s['min_repeats']} calls and ≥{s['min_time']:g} s per implementation"
                 + (" and round" if s.get("rounds") else "") + ", "
                 + _timing_words(s) + "; gc on.")
    if s["check"]:
        lines.append("- Checked first on every row (float64, same weights and data, the second of two calls): loss "
                     "and all five gradients of every implementation equal the numpy min-char-rnn reference (worst "
                     f"relative difference {max(max(r['check'].values()) for r in rows):.1e}).")
    for key, note in results.get("skipped", {}).items():
        lines.append(f"- {key}: {note}.")
    lines.append(f"- Load average at start {tuple(round(x, 2) for x in env['load_average'] or ())}; "
                 f"total run {results.get('elapsed_s', 0):.0f} s.")
    labels = results["implementations"]
    lines += ["", "## In short (the README's table): median ms per step, ratios from the same run", ""]
    lines += compact_table(results)
    lines += ["", "## Time of one step, ms: median (min)", "",
              "| (B,T,d,V) | " + " | ".join(labels[k] for k in keys) + " | FLOP floor | other processes |",
              "|---|" + "--:|" * (len(keys) + 2)]
    for r in rows:
        cells = [f"{_ms(r['median_s'][k])} ({_ms(r['min_s'][k])})" for k in keys]
        gflops = r["flops"] / r["median_s"]["tinygrad"] / 1e9 if "tinygrad" in keys else None
        if gflops is not None:
            cells[0] += f" [{gflops:.3g} GF/s]"
        others = r.get("others_cores")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {_ms(r['flop_floor_s'])} | "
                     + ("—" if others is None else f"{others:.2f} cores") + " |")
    lines.append("")
    lines.append("FLOP floor = 2TB(5Vd + 3d²) FLOPs at the sgemm rate above. [GF/s] = tinygrad_rnn's achieved "
                 "matmul GFLOP/s. Other processes = cores kept busy by the rest of the machine while the row was "
                 "timed (/proc/stat minus this process): above ~0.2 the row's times are inflated, torch's the most "
                 "(its OpenMP threads wait at barriers for descheduled siblings).")
    if "tinygrad" in keys:
        ref_keys = [k for k in keys if k != "tinygrad"]
        lines += ["", "## tinygrad_rnn relative to each, measured side by side in this run: time ÷ time of medians "
                  "(of mins); < 1 is faster", "",
                  "| (B,T,d,V) | " + " | ".join("÷ " + labels[k] for k in ref_keys) + " | targets (medians) |",
                  "|---|" + "--:|" * len(ref_keys) + "---|"]
        for r in rows:
            med = r["median_s"]
            low = r["min_s"]
            cells = [f"{med['tinygrad'] / med[k]:.2f} ({low['tinygrad'] / low[k]:.2f})" for k in ref_keys]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {_targets_text(r)} |")
    if any(r.get("agreement") for r in rows):
        lines += _agreement_section(results)
    if any("peak_bytes" in r for r in rows):
        mem_keys = [k for k in keys if BY_KEY.get(k) is None or BY_KEY[k].memory]
        lines += ["", "## Peak memory of one step, MiB (and ÷ T·B·d·4 bytes, one float32 state per step)", "",
                  "| (B,T,d,V) | " + " | ".join(labels[k] for k in mem_keys) + " |",
                  "|---|" + "--:|" * len(mem_keys)]
        for r in rows:  # (no ratio here: tracemalloc and torch's profiler count different things)
            peak, unit = r["peak_bytes"], r["row"][0] * r["row"][1] * r["row"][2] * 4
            cells = [f"{_mib(peak[k])} ({peak[k] / unit:.3g})" if peak.get(k) is not None else "—" for k in mem_keys]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
        if any(r.get("rss_bytes") for r in rows):
            lines += ["", "### Same, measured as growth of peak RSS in a fresh process (VmHWM after resetting it), "
                      "MiB", "",
                  "| (B,T,d,V) | " + " | ".join(labels[k] for k in mem_keys)
                      + " | target: peak ≤ torch loop's |", "|---|" + "--:|" * len(mem_keys) + "---|"]
            for r in rows:  # the memory target is judged here, where everyone is measured alike
                rss = r.get("rss_bytes", {})
                versus = "—"
                if rss.get("tinygrad") and rss.get("torch_loop"):
                    ok = "✅" if rss["tinygrad"] <= rss["torch_loop"] else "❌"
                    versus = f"{rss['tinygrad'] / rss['torch_loop']:.2f}× {ok}"
                lines.append(f"| {r['label']} | " + " | ".join(_mib(rss.get(k)) for k in mem_keys)
                             + f" | {versus} |")
        lines += ["", "numpy, tinygrad_rnn, HIPS autograd and MyGrad: tracemalloc peak during one call "
                  "(array buffers and Python objects such "
                  "as graph nodes and closures, the returned gradients included). torch: the profiler's allocator "
                  "events (`profile_memory=True`, each op's self_cpu_memory_usage summed in time order): tensor "
                  "storage only, at op resolution; autograd's C++ graph nodes are not counted, so torch's figure "
                  "is a lower bound. The RSS table measures everyone the same way (every allocation, at page "
                  "resolution, after warming code paths on a tiny row): below a few MiB it is mostly allocator "
                  "noise (glibc reuses freed pages, so 0 means 'fits in memory already touched'). jax is not "
                  "measured: its buffers live in XLA's allocator, which neither measure sees alike."]
    if results.get("memory_vs_T"):
        lines += _memory_versus_T(results["memory_vs_T"], results["implementations"])
    if results.get("overhead"):
        lines += ["", "## Per-node overhead, (4,4) float32, µs (target ≤ 1 µs forward and backward)", "",
                  "Overhead = tinygrad_rnn's time per node − numpy doing the same math without a graph (the "
                  "target's 'per-node overhead'); the totals are shown beside it.", "",
                  "| op | numpy forward | tinygrad_rnn forward | **overhead forward** | numpy backward / node | "
                  "tinygrad_rnn backward / node | **overhead backward** | torch forward | torch backward / node | "
                  "overhead ≤ 1 µs |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        for o in results["overhead"]:
            fwd, bwd = _overheads(o)
            lines.append(f"| {o['op']} | {fmt(o.get('numpy_us'))} | {fmt(o.get('tinygrad_fwd_us'))} | "
                         f"**{fmt(fwd)}** | {fmt(o.get('numpy_bwd_us'))} | {fmt(o.get('tinygrad_bwd_us'))} | "
                         f"**{fmt(bwd)}** | {fmt(o.get('torch_fwd_us'))} | {fmt(o.get('torch_bwd_us'))} | "
                         f"{_overhead_verdict(o)} |")
        o = results["overhead"][0]
        lines += ["", "Forward: one op on inputs that require grad, result dropped (record + free), best of "
                  f"{o.get('repeats')} × {o.get('n_forward')}. Backward: a chain of {o.get('chain')} such ops (the "
                  "second input shared by all), root.backward(ones) ÷ chain length, best of "
                  f"{o.get('repeats')} (topological sort, walk and gradient sums included). numpy backward: the "
                  "same chain's gradients in a plain loop (add: the shared input sums g; tanh: g·(1 − y²); matmul: "
                  "xᵀg summed into the shared weight and g·Wᵀ passed on). The W(t) row's numpy is the plain matmul's."]
    return "\n".join(lines) + "\n"


COMPACT = ("tinygrad", "tinygrad_replayed", "torch_loop", "torch_fused", "numpy_hoisted", "jax_scan", "hips_autograd",
           "mygrad")
COMPACT_RATIOS = {"torch_loop": "torch loop", "torch_fused": "nn.RNN", "numpy_hoisted": "hoisted", "jax_scan": "jax"}


def compact_table(results):
    """Markdown lines: the main implementations' medians, tinygrad_rnn ÷ the main references (same run), and
    whether the two ways of timing agreed on the row."""
    labels = results["implementations"]
    keys = [k for k in COMPACT if k in labels]
    ratios = [k for k in COMPACT_RATIOS if k in labels and "tinygrad" in labels]
    compared = any(r.get("agreement") for r in results["rows"])
    lines = ["| (B,T,d,V) | " + " | ".join(labels[k] for k in keys)
             + "".join(f" | engine ÷ {COMPACT_RATIOS[k]}" for k in ratios)
             + (" | two ways agree |" if compared else " |"),
             "|---|" + "--:|" * (len(keys) + len(ratios)) + ("---|" if compared else "")]
    for r in results["rows"]:
        med = r["median_s"]
        cells = [_ms(med[k]) for k in keys] + [f"{med['tinygrad'] / med[k]:.3g}×" for k in ratios]
        if compared:
            agree = r.get("agreement", {})
            apart = sorted(((ratio, k) for k, (ratio, ok) in agree.items() if not ok), key=lambda a: -abs(a[0] - 1))
            named = ", ".join(f"{labels[k]} {ratio:.2f}" for ratio, k in apart[:2])
            cells.append("✅" if not apart else f"❌ {named}" if len(apart) <= 2 else
                         f"❌ {len(apart)} of {len(agree)} apart, farthest {named}")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def _timing_words(settings):
    if settings.get("timing") not in ("block", "rounds"):  # results of the former harness
        return "implementations taking turns in ~0.1 s bursts, after 2 warm-up calls"
    block = (f"each implementation timed in its own block after its own warm-up (≥ 2 calls and ≥ "
             f"{settings['warmup_s']:g} s, so no other library's threads are still spinning)")
    if settings.get("timing") == "block":
        return block
    rounds = settings["rounds"]
    return (f"in {rounds} round{'s' if rounds > 1 else ''} of fresh processes, each building every "
            f"implementation and {block}; a time is the best round's median")


def _targets_text(row):
    goals = [goal for engine_goals in row.get("targets", {}).values() for goal in engine_goals]
    return "; ".join(f"{text} {'✅' if met else '❌'}" for text, met in goals) or "—"


SECOND_WAY = {"process": "in a fresh process of its own in every round (the same block timing, no other "
                        "library loaded)",
              "interleaved": "in turns of ~0.1 s with the others (the former scheme)"}


def _agreement_section(results):
    """Median in its own block ÷ median measured the second way, per row and implementation, and the verdict."""
    s, rows = results["settings"], results["rows"]
    keys, labels = list(results["implementations"]), results["implementations"]
    lines = ["", f"## Two ways agree? Time beside the others ÷ time {SECOND_WAY[s['compare']]}", "",
             "| (B,T,d,V) | " + " | ".join(labels[k] for k in keys) + " | other processes (2nd way) |",
             "|---|" + "--:|" * len(keys) + "--:|"]
    for r in rows:
        agree = r.get("agreement", {})
        cells = [f"{agree[k][0]:.2f} {'✅' if agree[k][1] else '❌'}" if k in agree else "—" for k in keys]
        others = r.get("second_way", {}).get("others_cores")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " | "
                     + ("—" if others is None else f"{others:.2f} cores") + " |")
    lines += ["", agreement_verdict(results)]
    return lines


def agreement_verdict(results, listed=4):
    """One sentence: on how many cells the two ways agree within the tolerance, the cells farthest apart (at most
    `listed`), and the rows timed while other processes kept the machine busy."""
    within = results["settings"]["agree_within"]
    cells = [(r["label"], k, ratio, ok) for r in results["rows"] for k, (ratio, ok) in r.get("agreement", {}).items()]
    apart = sorted((c for c in cells if not c[3]), key=lambda c: -abs(c[2] - 1))
    text = f"The two ways agree within {100 * within:g} % on {len(cells) - len(apart)} of {len(cells)} cells"
    if apart:
        text += ("; farthest apart: " if len(apart) > listed else "; apart: ") + ", ".join(
            f"{results['implementations'][k]} at {label} ({ratio:.2f})" for label, k, ratio, _ in apart[:listed])
    text += "."
    busy = [r["label"] for r in results["rows"] if max(r.get("others_cores") or 0,
                                                       r.get("second_way", {}).get("others_cores") or 0) > 0.2]
    if busy:
        text += (" Other processes kept more than 0.2 cores busy while " + ("every row" if len(busy) == len(
            results["rows"]) > 1 else ", ".join(busy)) + " ran: rerun on a quiet machine (`--wait-quiet`).")
    return text


def summary(results):
    """A few lines for the terminal: per row the medians, the engine's ratio to each, the targets, and whether
    the two ways of timing agree."""
    labels, out = results["implementations"], []
    out.append("One BPTT training step, float32, median ms per step (tinygrad_rnn ÷ it), "
               + _timing_words(results["settings"]) + ":")
    for r in results["rows"]:
        med, tg = r["median_s"], r["median_s"].get("tinygrad")
        cells = [f"{labels[k]} {_ms(v)}" + (f" ({tg / v:.2f}×)" if tg and k != "tinygrad" else "")
                 for k, v in med.items()]
        out.append(f"{r['label']}: " + " · ".join(cells))
        if r.get("targets"):
            out.append(f"  targets: {_targets_text(r)}")
    if any(r.get("agreement") for r in results["rows"]):
        out.append(agreement_verdict(results))
    for key, note in results.get("skipped", {}).items():
        out.append(f"{key}: {note}")
    return "\n".join(out) + "\n"


def _memory_versus_T(entries, labels):
    """The 'linear in T' table: peak bytes of one step per step of sequence, at growing T."""
    keys = [k for k in labels if all(e["peak_bytes"].get(k) for e in entries)]
    first = entries[0]
    lines = ["", f"## Peak memory of one step vs T (B = {first['B']}, d = {first['d']}, V = {first['V']}): KiB per "
             "step of sequence", "",
             "| T | " + " | ".join(labels[k] for k in keys) + " |", "|--:|" + "--:|" * len(keys)]
    for e in entries:
        lines.append(f"| {e['T']} | " + " | ".join(f"{e['peak_bytes'][k] / e['T'] / 1024:.2f}" for k in keys)
                     + " |")
    if "tinygrad" in keys:
        per_step = [e["peak_bytes"]["tinygrad"] / e["T"] for e in entries]
        spread = max(per_step) / min(per_step)
        lines += ["", f"tinygrad_rnn: peak ÷ T varies by {spread:.2f}× from T = {entries[0]['T']} to "
                  f"{entries[-1]['T']} (target: linear in T, i.e. a constant per step: "
                  f"{'✅' if spread <= 1.3 else '❌'} within 1.3×). Same measures as the peak-memory table above."]
    return lines


def _overheads(o):
    """(forward, backward) µs per node beyond numpy's own time for the same math (None where unmeasured)."""
    np_fwd = o.get("numpy_us")
    fwd = None if o.get("tinygrad_fwd_us") is None or np_fwd is None else o["tinygrad_fwd_us"] - np_fwd
    bwd = None if o.get("tinygrad_bwd_us") is None or o.get("numpy_bwd_us") is None \
        else o["tinygrad_bwd_us"] - o["numpy_bwd_us"]
    return fwd, bwd


def _overhead_verdict(o):
    measured = [v for v in _overheads(o) if v is not None]
    return "—" if not measured else "✅" if max(measured) <= 1.0 else "❌"


def chart_figure(results):
    """A matplotlib Figure (no pyplot, no backend switch): per row, each implementation's time ÷ PyTorch
    autograd's loop (CE per step) and ÷ numpy hoisted, on log axes, rows in order of FLOPs."""
    from matplotlib.figure import Figure
    rows = sorted(results["rows"], key=lambda r: r["flops"])
    keys = list(results["implementations"])
    x = np.arange(len(rows))
    refs = [k for k in ("torch_loop", "numpy_hoisted") if k in keys]
    fig = Figure(figsize=(6.5 * len(refs), 4.8))
    axes = fig.subplots(1, len(refs), squeeze=False)
    for ax, ref in zip(axes[0], refs):
        for key in keys:
            ratios = [r["median_s"][key] / r["median_s"][ref] for r in rows]
            style = dict(linewidth=2.8, color="black", zorder=3) if key == "tinygrad" else dict(linewidth=1.2)
            ax.plot(x, ratios, marker="o", label=results["implementations"][key], **style)
        ax.axhline(1, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{r['label']}\n{r['flops'] / 1e6:.3g} MFLOP" for r in rows], fontsize=7)
        ax.set_ylabel(f"time ÷ {results['implementations'][ref]}")
        ax.set_title(f"relative to {results['implementations'][ref]}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    env = results["environment"]
    fig.suptitle(f"One BPTT step (B,T,d,V), float32 — numpy BLAS {env['blas'].get('kernel')} "
                 f"{_threads(env['blas'].get('threads'))}, {env['cpu']}", fontsize=9)
    fig.tight_layout()
    return fig


def write_chart(results, path):
    """The chart of `chart_figure` as a PNG."""
    chart_figure(results).savefig(path, dpi=120)


def write_json(results, path):
    Path(path).write_text(json.dumps(results, indent=1, default=str))


def write_results(results, out_dir, stem="bptt", chart=True):
    """Write `<stem>.md`, `<stem>.json` and (chart=True) `<stem>.png` into out_dir; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.json"]
    paths[0].write_text(markdown(results))
    write_json(results, paths[1])
    if chart:
        paths.append(out_dir / f"{stem}.png")
        write_chart(results, paths[2])
    return paths
