"""Start-up: seconds from ``python experiments/run.py convlstm_mnist.yaml`` to the first training step, without and with
MindSpore's compile cache (first and second run), and the test stage's wall time.

Each run is a subprocess ``python experiments/run.py <config> trainer.max_steps=2 --stage fit`` on a copy of the
config (``experiments/convlstm_mnist.yaml``) with one callback added, ``bench/_startup_mark.py``, which prints the wall
clock at the first training step's end (and at setup, the sanity check, the test stage); the run's outputs go to a
temporary folder. Everything else is the experiment as configured (its sanity validation step included: the
breakdown shows it). Timed from just before the subprocess starts. The second step is timed too: the first step's
compilation is estimated as first step - second step.

Compile cache: MindSpore 2.10 keeps a persistent front-end graph compile cache when ``MS_COMPILER_CACHE_ENABLE=1``
(the environment form of ``set_context(enable_compile_cache=True)``), written under ``MS_COMPILER_CACHE_PATH``
(``<path>/rank_0/graph_cache``). Runs alternate: no cache, cache (cold: it is filled), cache (warm), then again no
cache and warm cache for each further ``--rounds``. The last run also runs the test stage (``--stage fit,test``;
the test set as configured, or ``--test-batches`` of it): its wall time, the Trainer's test loop, and the seconds
spent in ``msforge.metrics.video_metrics`` (MSE/MAE/SSIM/PSNR) inside it.

    python bench/startup.py [--config experiments/convlstm_mnist.yaml] [--rounds 1] [--test-batches N] [--json]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import yaml  # noqa: E402

from _common import ROOT, emit, loadavg, median  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(ROOT, "experiments", "run.py")
DEFAULT_CONFIG = os.path.join(ROOT, "experiments", "convlstm_mnist.yaml")
MARK = "MSFORGE_BENCH_MARK "


def marked_config(config_path, workdir):
    """A copy of the config with the mark callback appended, same file name (so the same run name)."""
    with open(config_path) as f:
        config = yaml.safe_load(f)
    config.setdefault("callbacks", [])
    config["callbacks"] = list(config["callbacks"] or []) + [{"class_path": "_startup_mark.StartupMark"}]
    path = os.path.join(workdir, os.path.basename(config_path))
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


class RunFailed(RuntimeError):
    pass


def run_once(label, config, workdir, cache_dir=None, stages="fit", test_batches=None, extra=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MS_COMPILER_CACHE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [BENCH, ROOT, os.environ.get("PYTHONPATH")]))
    if cache_dir:
        env.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=cache_dir)
    overrides = ["trainer.max_steps=2", f"trainer.default_root_dir={os.path.join(workdir, 'runs')}"]
    if test_batches:
        overrides.append(f"trainer.limit_test_batches={test_batches}")
    overrides += list(extra)
    cmd = [sys.executable, RUN, config, *overrides, "--stage", stages]
    log_path = os.path.join(workdir, f"{label}.log")
    load = loadavg()
    with open(log_path, "w") as log:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=workdir, env=env)
        marks = {}
        for line in proc.stdout:
            if line.startswith(MARK):
                event, value = line[len(MARK):].split()
                marks.setdefault(event, float(value))
            else:
                log.write(line)
        code = proc.wait()
        t_exit = time.time()
    if code != 0 or "second_train_batch_end" not in marks:
        with open(log_path) as f:
            lines = [ln.strip() for ln in f if ln.strip() and "WARNING" not in ln]
        error = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        raise RunFailed(f"run {label!r} failed (exit {code}) after {time.time() - t0:.0f} s: {error}")
    r = {"first_step_s": marks["first_train_batch_end"] - t0,
         "to_fit_setup_s": marks["setup_fit"] - t0,  # imports, config check, model and data built
         "first_step_compile_and_run_s": marks["first_train_batch_end"] - marks["first_train_batch_start"],
         "second_step_s": marks["second_train_batch_end"] - marks["first_train_batch_end"],
         "sanity_check_s": marks.get("sanity_end", 0.0) - marks.get("sanity_start", 0.0),
         "process_s": t_exit - t0, "loadavg": load}
    r["first_step_compile_s"] = r["first_step_compile_and_run_s"] - r["second_step_s"]  # the step itself removed
    if "test_start" in marks:
        r.update(test_loop_s=marks["test_end"] - marks["test_start"], test_metrics_s=marks["test_metric_seconds"],
                 test_stage_s=t_exit - marks["setup_test"])
    return r


def dir_size(path):
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--rounds", type=int, default=2,
                        help="1: no cache, cache cold, cache warm; each further round: no cache, cache warm")
    parser.add_argument("--test-batches", type=int, default=None, help="limit_test_batches for the test stage")
    parser.add_argument("--no-test", action="store_true", help="skip the test stage")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    if not os.path.isfile(RUN):
        raise SystemExit(f"startup: {RUN} is missing")
    workdir = tempfile.mkdtemp(prefix="bench_startup_")
    cache = os.path.join(workdir, "compile_cache")
    plan = [("nocache_1", None), ("cache_cold", cache), ("cache_warm_1", cache)]
    for r in range(2, args.rounds + 1):
        plan += [(f"nocache_{r}", None), (f"cache_warm_{r}", cache)]
    config = marked_config(args.config, workdir)
    runs, cache_error, extra = {}, None, ()
    try:
        for i, (label, cache_dir) in enumerate(plan):
            last = i == len(plan) - 1 and not args.no_test
            try:
                runs[label] = run_once(label, config, workdir, cache_dir, "fit,test" if last else "fit",
                                       args.test_batches, extra)
            except RunFailed as err:
                if label != "cache_cold":
                    raise
                # the model as configured cannot use the cache: time it with the loss-only variant, and say so
                cache_error = str(err)
                shutil.rmtree(cache, ignore_errors=True)
                extra = ("model.class_path=_startup_mark.LossOnlyConvLSTM",)
                runs[label] = run_once(label, config, workdir, cache_dir, "fit", args.test_batches, extra)
    except BaseException:
        print(f"startup: failed; logs in {workdir}", file=sys.stderr)
        raise
    cache_bytes = dir_size(cache)
    nocache = [v["first_step_s"] for k, v in runs.items() if k.startswith("nocache")]
    warm = [v["first_step_s"] for k, v in runs.items() if k.startswith("cache_warm")]
    result = {
        "startup_first_run_s": runs["nocache_1"]["first_step_s"],
        "startup_nocache_s": median(nocache),
        "startup_cache_cold_s": runs["cache_cold"]["first_step_s"],
        "startup_cache_warm_s": median(warm),
        "startup_second_run_s": median(warm),
        "startup_ratio_warm_over_nocache": median(warm) / median(nocache),
        "startup_cache_bytes": cache_bytes,
        "startup_breakdown_nocache_1": runs["nocache_1"],
        "startup_breakdown_cache_warm_1": runs["cache_warm_1"],
        "startup_loadavg": round(median([v["loadavg"] for v in runs.values()]), 2),
        "startup_cache_works_with_model_as_configured": cache_error is None,
    }
    if cache_error:
        result["startup_cache_error"] = cache_error
    test = next((v for v in runs.values() if "test_stage_s" in v), None)
    if test:
        result.update(startup_test_stage_s=test["test_stage_s"], startup_test_loop_s=test["test_loop_s"],
                      startup_test_metrics_s=test["test_metrics_s"],
                      startup_test_metrics_share=test["test_metrics_s"] / test["test_loop_s"],
                      startup_test_batches=args.test_batches or "all")
    lines = [f"{label:13s} first training step after {v['first_step_s']:6.1f} s (setup {v['to_fit_setup_s']:.1f} s, "
             f"sanity check {v['sanity_check_s']:.1f} s, first step {v['first_step_compile_and_run_s']:.1f} s of which "
             f"compile ~{v['first_step_compile_s']:.1f} s (first - second step); process {v['process_s']:.1f} s; "
             f"load average {v['loadavg']})" for label, v in runs.items()]
    if cache_error:
        lines.append(f"compile cache with the model as configured: {cache_error}; the cache_* runs (and every run "
                     "after them) use bench/_startup_mark.py's LossOnlyConvLSTM (training_step returns the loss only)")
    lines.append(f"compile cache (MS_COMPILER_CACHE_ENABLE=1): {cache_bytes / 1e6:.1f} MB; warm/no-cache = "
                 f"{result['startup_ratio_warm_over_nocache']:.2f}; second run {median(warm):.1f} s (target < 10 s)")
    if test:
        lines.append(f"test stage ({result['startup_test_batches']} batches): {test['test_stage_s']:.1f} s wall, "
                     f"Trainer test loop {test['test_loop_s']:.1f} s, of which metrics {test['test_metrics_s']:.1f} s "
                     f"({100 * result['startup_test_metrics_share']:.0f}%)")
    shutil.rmtree(workdir, ignore_errors=True)
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
