"""Run every benchmark in bench/ and print one JSON object with all their figures as the last line.

Each benchmark runs as its own subprocess with ``--json`` (its last stdout line is its JSON object), one after the
other, never two at once. ``--quick`` uses reduced sizes (fewer epochs, blocks and steps; vs_lightning only the
default experiment's model, not the seed architecture; start-up one round and 8 test batches) to finish in under 10
minutes on an idle 2-core machine, but keeps enough alternating rounds for the ratios issue 15 names: overhead.py
and tiny.py at their defaults, vs_lightning 6 rounds of 4 steps (with one round those ratios swung by 20-30% between
runs on this machine). On a loaded machine it takes longer: each benchmark's timeout is a safety net, not a budget.
A benchmark that fails or times out is reported as ``<name>_error`` and the others still run. ``load_average_*`` are
the 1-minute load averages at start and end (2 cores: above ~2, other work was competing with the benchmarks and the
absolute times are inflated; the ratios come from A/B alternation inside each benchmark and hold up better).

    python bench/run_all.py [--quick] [--only name,name] [--json]
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, last_json, loadavg  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))

# name: (script, full arguments, quick arguments, timeout in seconds for full, quick)
BENCHMARKS = [
    ("overhead", "overhead.py", [], [], (900, 300)),
    ("vs_model_train", "vs_model_train.py", [], ["--epochs", "4", "--batches", "10"], (900, 300)),
    ("vs_model_train_convlstm", "vs_model_train.py", ["--model", "convlstm", "--epochs", "4"], None, (1800, 0)),
    ("data", "data.py", [], ["--blocks", "2", "--steps", "3", "--warmup", "1", "--gen-batches", "4"], (1800, 600)),
    ("mfu", "mfu.py", [], ["--blocks", "2", "--steps", "2", "--warmup", "1", "--matmuls", "3"], (1800, 600)),
    ("vs_lightning", "vs_lightning.py", [],
     ["--archs", "default", "--rounds", "6", "--steps", "4", "--warmup", "2"], (3600, 900)),
    ("startup", "startup.py", [], ["--rounds", "1", "--test-batches", "8"], (3600, 1200)),
    ("tiny", "tiny.py", [], [], (900, 300)),
    ("bf16_kernels", "bf16_kernels.py", [], ["--repeats", "5"], (300, 120)),
    ("bf16_step", "bf16_step.py", [], ["--rounds", "2", "--steps", "5"], (1800, 600)),
    ("ssim_loss", "ssim_loss.py", [], ["--rounds", "2", "--steps", "5"], (600, 300)),
    ("vs_lightning_bf16", "vs_lightning.py", ["--archs", "default", "--precision", "bf16-mixed"],
     ["--archs", "default", "--rounds", "6", "--steps", "4", "--warmup", "2", "--precision", "bf16-mixed"],
     (3600, 900)),
]
# the names for figures the benchmarks print under longer ones
SUMMARY_KEYS = {"bf16_ratio_msforge_over_lightning": "bf16_default_ratio_msforge_over_lightning"}


def run(name, script, arguments, timeout):
    cmd = [sys.executable, os.path.join(BENCH, script), *arguments, "--json"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {f"{name}_error": f"timed out after {timeout} s: {' '.join(cmd[1:])}"}, time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    try:
        result = last_json(proc.stdout)
    except ValueError:
        result = {}
    if proc.returncode != 0 or not result:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        result = dict(result)
        result[f"{name}_error"] = f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"
    return result, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: under 10 minutes on an idle machine")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    combined = {"quick": args.quick, "load_average_start": loadavg()}
    t0 = time.perf_counter()
    for name, script, full, quick, timeouts in BENCHMARKS:
        if only is not None and name not in only:
            continue
        arguments = quick if args.quick else full
        if arguments is None:  # not part of --quick
            continue
        result, seconds = run(name, script, arguments, timeouts[1] if args.quick else timeouts[0])
        combined.update(result)
        combined[f"{name}_wall_s"] = round(seconds, 1)
        if not args.json:
            status = result.get(f"{name}_error", "ok")
            print(f"{name}: {seconds:.0f} s, {status}; load average {loadavg()}", flush=True)
    for short, long in SUMMARY_KEYS.items():
        if long in combined:
            combined[short] = combined[long]
    combined["load_average_end"] = loadavg()
    combined["total_wall_s"] = round(time.perf_counter() - t0, 1)
    emit(combined, True)


if __name__ == "__main__":
    main()
