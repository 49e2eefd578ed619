"""Where the time of one msforge ConvLSTM training step goes: per MindSpore op type, and per oneDNN primitive.

Two views of the same Trainer step (``ConvLSTMModule``: ``--model cpu_small`` at batch 8 as in issue 5, ``default``
= the default experiment's model and batch size from experiments/convlstm_mnist.yaml, or ``seed``; random data):

* ``--mode ms``: MindSpore's profiler (``mindspore.Profiler``, CPU host ops) over ``--steps`` steps after
  ``--warmup``; prints the op types by total time and their share (``FRAMEWORK/cpu_op_type_info_0.csv``).
* ``--mode onednn``: a subprocess with ``ONEDNN_VERBOSE=1``; every oneDNN primitive execution between two step
  markers is summed by (primitive, implementation, propagation, shape); prints the top ones and their share of the
  step's wall time. (MindSpore runs convolutions and some others through oneDNN; GroupNorm, the gate arithmetic,
  AddN, Adam are its own kernels and only appear in the ``ms`` view.)

Both profilers slow the step down somewhat; the shares are the finding, not the absolute times.

    python bench/profile_step.py [--mode ms|onednn|both] [--model cpu_small|default|seed] [--batch N] [--steps 2]
                                 [--warmup 2] [--top 15] [--keep] [--json] [--config mmnist_2h.yaml]
                                 [--precision 32|bf16-mixed]

``--config YAML`` profiles the model an experiment YAML names (class_path, init_args) at its batch size instead.
"""
import argparse
import collections
import csv
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_CHOICES, ROOT, child_env, emit, loadavg, median, model_spec  # noqa: E402

STEP_MARK = "BENCH_STEP_END"


def train(args, on_batch_end):
    import msforge  # noqa: F401  (before mindspore)
    import numpy as np

    from models.convlstm import ConvLSTMModule
    from msforge import Callback, Trainer

    class Hook(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            on_batch_end(batch_idx)

    if args.config:
        model, batch = model_from_config(args.config)
    else:
        kwargs, batch = model_spec(args.model)
        model = ConvLSTMModule(**kwargs)
    args.batch = args.batch or batch
    rng = np.random.default_rng(0)
    shape = (args.batch, 10, 1, 64, 64)
    data = [(rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)) for _ in range(2)]
    total = args.warmup + args.steps
    trainer = Trainer(max_steps=total, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, callbacks=[Hook()], log_every_n_steps=50, precision=args.precision)
    trainer.fit(model, train_dataloaders=[data[i % 2] for i in range(total)])


def read_config(path):
    import yaml

    path = path if os.path.isfile(path) else os.path.join(ROOT, "experiments", path)
    with open(path) as f:
        return yaml.safe_load(f)


def config_trainer(path):
    """The trainer section of an experiment YAML."""
    return read_config(path).get("trainer") or {}


def model_from_config(path):
    """The model an experiment YAML names (its class_path and init_args) and its batch size."""
    import importlib

    config = read_config(path)
    module_name, _, class_name = config["model"]["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**(config["model"].get("init_args") or {})), int(config["data"]["init_args"]["batch_size"])


def profile_ms(args):
    import msforge  # noqa: F401  (before mindspore: caps oneDNN's ISA)
    import mindspore as ms

    out = tempfile.mkdtemp(prefix="bench_profile_")
    state = {}

    def hook(batch_idx):
        if batch_idx + 1 == args.warmup:
            state["profiler"] = ms.Profiler(output_path=out)
            state["t0"] = time.perf_counter()
        elif batch_idx + 1 == args.warmup + args.steps:
            state["seconds"] = time.perf_counter() - state["t0"]
            state["profiler"].analyse()

    train(args, hook)
    files = glob.glob(os.path.join(out, "**", "cpu_op_type_info_0.csv"), recursive=True)
    if not files:
        raise SystemExit(f"profile_step: no cpu_op_type_info_0.csv under {out}")
    with open(files[0]) as f:
        rows = list(csv.DictReader(f))
    total_ms = sum(float(r["total_compute_time"]) for r in rows)
    ops = sorted(({"op": r["op_type"], "ms_per_step": float(r["total_compute_time"]) / args.steps,
                   "calls_per_step": int(r["type_occurrences"]) // args.steps,
                   "share_of_op_time": float(r["total_compute_time"]) / total_ms} for r in rows),
                 key=lambda r: -r["ms_per_step"])
    if args.keep:
        print(f"MindSpore profiler output kept in {out}", file=sys.stderr)
    else:
        shutil.rmtree(out, ignore_errors=True)
    return {"ms_step_s_profiled": state["seconds"] / args.steps, "ms_op_time_per_step_s": total_ms / 1e3 / args.steps,
            "ms_ops": ops[: args.top]}


def onednn_child(args):
    def hook(batch_idx):
        sys.stdout.flush()
        print(f"{STEP_MARK} {batch_idx} {time.perf_counter()!r}", flush=True)

    train(args, hook)


def profile_onednn(args):
    env = dict(child_env(), ONEDNN_VERBOSE="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--model", args.model] + (["--batch", str(args.batch)] if args.batch else []) + \
        (["--config", args.config] if args.config else []) + ["--precision", args.precision]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            cwd=tempfile.gettempdir())
    marks, current, per_step, info = [], None, [], []
    for line in proc.stdout:
        if line.startswith(STEP_MARK):
            _, idx, t = line.split()
            marks.append(float(t))
            if current is not None:
                per_step.append(current)
            current = collections.defaultdict(lambda: [0.0, 0]) if int(idx) + 1 >= args.warmup else None
        elif line.startswith("onednn_verbose") and ",info," in line and ("isa:" in line or "runtime:" in line):
            info.append(line.strip().split(",", 4)[-1])
        elif current is not None and line.startswith("onednn_verbose") and ",exec," in line:
            f = line.strip().split(",")
            # v1 format: onednn_verbose,v1,primitive,exec,cpu,kind,impl,prop,mds,attrs,aux,problem,time
            kind, impl, prop, problem, ms_ = f[5], f[6], f[7], f[-2], float(f[-1])
            fmt = "blocked" if any(t in f[8] for t in ("8c", "16c", "8i", "16i", "8o", "16o")) else "plain"
            entry = current[(kind, impl, prop, fmt, problem)]
            entry[0] += ms_
            entry[1] += 1
    code = proc.wait()
    if code != 0 or len(per_step) < 1:
        raise SystemExit(f"profile_step: the ONEDNN_VERBOSE subprocess failed (exit {code}): {' '.join(cmd)}")
    step_walls = [b - a for a, b in zip(marks[args.warmup - 1:], marks[args.warmup:])]
    totals = collections.defaultdict(lambda: [0.0, 0])
    for step in per_step:
        for key, (ms_, n) in step.items():
            totals[key][0] += ms_ / len(per_step)
            totals[key][1] += n / len(per_step)
    wall_ms = median(step_walls) * 1e3
    by_kind = collections.defaultdict(float)
    for (kind, impl, prop, fmt, _), (ms_, _) in totals.items():
        by_kind[f"{kind} {impl} {prop} ({fmt})"] += ms_
    top = sorted(totals.items(), key=lambda kv: -kv[1][0])[: args.top]
    return {
        "onednn_step_s_profiled": wall_ms / 1e3,
        "onednn_time_per_step_s": sum(v[0] for v in totals.values()) / 1e3,
        "onednn_share_of_step": sum(v[0] for v in totals.values()) / wall_ms,
        "onednn_info": info,
        "onednn_by_kind": sorted(({"kind": k, "ms_per_step": v, "share_of_step": v / wall_ms}
                                  for k, v in by_kind.items()), key=lambda r: -r["ms_per_step"]),
        "onednn_top": [{"kind": k[0], "impl": k[1], "prop": k[2], "format": k[3], "problem": k[4],
                        "ms_per_step": v[0], "calls_per_step": v[1], "share_of_step": v[0] / wall_ms}
                       for k, v in top],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("ms", "onednn", "both"), default="both")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="cpu_small",
                        help="default: the default experiment's model and batch size; cpu_small (batch 8), seed (2)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the model's)")
    parser.add_argument("--config", default=None, help="profile this experiment YAML's model and batch size instead")
    parser.add_argument("--precision", default=None, choices=("32", "bf16-mixed"),
                        help="the Trainer's precision (default: the --config YAML's, else 32)")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps before profiling (the first compiles)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep MindSpore's profiler output folder")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config and os.path.isfile(args.config):
        args.config = os.path.abspath(args.config)  # the oneDNN child runs in another folder
    if args.precision is None:
        args.precision = str(config_trainer(args.config).get("precision", "32")) if args.config else "32"
    if args.child:
        onednn_child(args)
        return
    if args.config:
        result = {"profile_config": os.path.basename(args.config), "profile_loadavg_start": loadavg()}
    else:
        result = {"profile_model": args.model, "profile_model_kwargs": model_spec(args.model)[0],
                  "profile_batch": args.batch or model_spec(args.model)[1], "profile_loadavg_start": loadavg()}
    result["profile_precision"] = args.precision
    lines = []
    if args.mode in ("onednn", "both"):
        r = profile_onednn(args)
        result.update(r)
        lines.append(f"oneDNN ({'; '.join(r['onednn_info'])}): {r['onednn_time_per_step_s']:.2f} s of a "
                     f"{r['onednn_step_s_profiled']:.2f} s step ({100 * r['onednn_share_of_step']:.0f}%)")
        lines += [f"  {100 * k['share_of_step']:5.1f}%  {k['ms_per_step']:8.1f} ms  {k['kind']}"
                  for k in r["onednn_by_kind"]]
        lines.append("  top primitives (share of step, ms/step, calls/step):")
        lines += [f"  {100 * t['share_of_step']:5.1f}%  {t['ms_per_step']:8.1f} ms  x{t['calls_per_step']:<4g} "
                  f"{t['kind']} {t['impl']} {t['prop']} ({t['format']}) {t['problem']}" for t in r["onednn_top"]]
        print("\n".join(lines) if not args.json else "", flush=True)  # the ms view takes a while more
        lines = []
    if args.mode in ("ms", "both"):
        r = profile_ms(args)
        result.update(r)
        lines.append(f"MindSpore profiler: op time {r['ms_op_time_per_step_s']:.2f} s per step, step "
                     f"{r['ms_step_s_profiled']:.2f} s (profiled); op types by time:")
        lines += [f"  {100 * o['share_of_op_time']:5.1f}%  {o['ms_per_step']:8.1f} ms  x{o['calls_per_step']:<5d} "
                  f"{o['op']}" for o in r["ms_ops"]]
    result["profile_loadavg_end"] = loadavg()
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
