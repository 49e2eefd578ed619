#!/usr/bin/env python
"""Equal-budget comparison: every model trained for the same wall time on this machine, tested on the same videos.

    python experiments/compare.py [CONFIG ...] [--minutes 20] [--test-size 2000] [--val-every 100] [--loss mse]
                                  [--precision 32] [--root runs/compare] [--out docs/compare] [--report-only]

CONFIG defaults to the five Moving MNIST experiments (convlstm, predrnn, predrnn_v2, simvp, tau ``_mnist.yaml``).
Each one is run in turn by ``experiments/run.py`` (stages fit, test) from a copy of its config changed only where a
fair comparison needs it: ``trainer.max_time`` = ``--minutes`` (compilation and validation count against it), one
long epoch (``samples_per_epoch`` large enough never to end) validated every ``--val-every`` steps (default: the
config's own ``val_check_interval`` when it counts steps, else 100), no early
stopping, a ``Timer`` callback, ``--test-size`` test videos (the data modules' test sets are generated from
held-out digits with a fixed seed, so every model is tested on the same videos), the same ``--loss`` and
``--precision`` for every model, and no ``lr_scheduler`` (a schedule sized in steps would stop at a different point
of it for each model in a wall-time budget: each trains at its config's constant ``lr``). Models and widths stay as
their configs set them. Run nothing else on the machine meanwhile: the budget is wall time.

Writes ``OUT.md`` (a Markdown table: parameters, GFLOPs per video, training videos/s, videos seen, test MSE / MAE /
SSIM, and the all-black and copy-last baselines on the same videos) and ``OUT.png`` (validation MSE against training
minutes, one line per model). ``--report-only`` rebuilds both from the run folders already under ``--root``.

GFLOPs per video are multiply-accumulates of the convolutions and dense layers in one forward pass over one video
(10 frames in, 10 out), counted with forward hooks, the way OpenSTL's tables count them (fvcore): one
multiply-add is one FLOP, elementwise operations are not counted.
"""
import argparse
import csv
import importlib
import json
import os
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_MODELS = ("convlstm", "predrnn", "predrnn_v2", "simvp", "tau")
DEFAULT_VAL_EVERY = 100
ONE_EPOCH = 10 ** 6  # samples_per_epoch: the run stops on max_time before an epoch this long ends


def model_name(config_path):
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return stem[:-len("_mnist")] if stem.endswith("_mnist") else stem


def find_config(name):
    for candidate in (name, os.path.join(HERE, name), os.path.join(HERE, name + ".yaml"),
                      os.path.join(HERE, name + "_mnist.yaml")):
        if os.path.isfile(candidate):
            return candidate
    raise SystemExit(f"error: config {name!r} not found (as given or in experiments/)")


def fair_config(config, name, minutes, test_size, val_every, root, loss="mse", precision="32"):
    """A copy of ``config`` changed only where an equal-time comparison needs it (see the module docstring)."""
    config = json.loads(json.dumps(config))  # deep copy of plain YAML data
    config["name"] = f"compare_{name}"
    trainer = config.setdefault("trainer", {})
    interval = trainer.get("val_check_interval")
    if val_every is not None or not isinstance(interval, int) or isinstance(interval, bool):
        interval = int(val_every or DEFAULT_VAL_EVERY)  # a fraction of the never-ending epoch would never come
    trainer.update(max_time=int(minutes * 60), max_epochs=1, val_check_interval=interval, default_root_dir=root,
                   precision=precision)
    config.pop("lr_scheduler", None)
    config["model"].setdefault("init_args", {})["loss"] = loss
    init = config["data"].setdefault("init_args", {})
    init.update(samples_per_epoch=ONE_EPOCH, test_size=int(test_size))
    callbacks = [c for c in config.get("callbacks") or [] if "EarlyStopping" not in c["class_path"]]
    if not any(c["class_path"].endswith("Timer") for c in callbacks):
        callbacks.append({"class_path": "callbacks.Timer"})
    config["callbacks"] = callbacks
    return config


def latest_run(root, name):
    folder = os.path.join(root, f"compare_{name}")
    versions = sorted((int(v.split("_")[1]), v) for v in os.listdir(folder) if v.startswith("version_")) \
        if os.path.isdir(folder) else []
    return os.path.join(folder, versions[-1][1]) if versions else None


def _env():
    """This checkout's packages first, whatever is installed (e.g. run from a snapshot: `git worktree add`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_one(config_path, args):
    name = model_name(config_path)
    with open(config_path) as f:
        config = fair_config(yaml.safe_load(f), name, args.minutes, args.test_size, args.val_every, args.root,
                             yaml.safe_load(args.loss), args.precision)
    os.makedirs(args.root, exist_ok=True)
    derived = os.path.join(args.root, f"compare_{name}.yaml")
    with open(derived, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    log = os.path.join(args.root, f"compare_{name}.log")
    print(f"[{time.strftime('%H:%M:%S')}] {name}: training {args.minutes:g} min, log {log}", flush=True)
    before, start = os.times(), time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, os.path.join(HERE, "run.py"), derived, "--stage", "fit,test"],
                               stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
    after, wall = os.times(), time.monotonic() - start
    # CPU seconds the run got per wall second: ~2 on an otherwise idle 2-core machine; less when others took CPU
    cpu = (after.children_user + after.children_system - before.children_user - before.children_system) / wall
    load = {"cpu_per_wall_s": cpu, "wall_s": wall, "load_15min_after": os.getloadavg()[2]}
    with open(os.path.join(args.root, f"compare_{name}.load.json"), "w") as f:
        json.dump(load, f)
    if code != 0:
        print(f"  {name}: run.py exited with {code}; see {log}", flush=True)
    return code


# == reading a finished run ==========================================================================================
def read_run(run_dir, name):
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    batch = int(config["data"]["init_args"]["batch_size"])
    val_mse, minutes, videos, train_s, val_s = {}, {}, 0.0, 0.0, 0.0
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        for row in csv.DictReader(f):  # val_* and the Timer's times are logged on separate rows of the same step
            if row.get("val_mse"):
                val_mse[int(row["step"])] = float(row["val_mse"])
            if row.get("time_train_s"):
                minutes[int(row["step"])] = float(row["time_train_s"]) / 60.0
                val_s = float(row["time_val_s"])
            if row.get("epoch_time") and row.get("throughput"):  # the one long epoch, stopped by max_time
                train_s += float(row["epoch_time"])
                videos += float(row["throughput"]) * float(row["epoch_time"])
    curve = [{"step": step, "minutes": minutes[step], "val_mse": val_mse[step]} for step in sorted(val_mse)
             if step in minutes]
    with open(os.path.join(run_dir, "test_metrics.json")) as f:
        test = json.load(f)
    load_path = os.path.join(os.path.dirname(os.path.dirname(run_dir)), f"compare_{name}.load.json")
    load = json.load(open(load_path)) if os.path.isfile(load_path) else {}
    return {"load": load, "config": config, "batch": batch, "curve": curve, "videos": videos,
            "videos_per_s": videos / max(train_s - val_s, 1e-9), "test": test}


def count_cost(config):
    """(trainable parameters, GFLOPs per video) of the config's model, built on the host in PyNative mode."""
    sys.path.insert(0, ROOT)
    import msforge  # noqa: F401  (first: caps oneDNN's ISA)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    ms.set_context(mode=ms.PYNATIVE_MODE)
    module_name, _, class_name = config["model"]["class_path"].rpartition(".")
    model = getattr(importlib.import_module(module_name), class_name)(**config["model"].get("init_args", {}))
    params = int(sum(np.prod(p.shape) for p in model.trainable_params()))
    macs = [0]

    def hook(cell, inputs, output):
        weight = cell.weight.shape
        if isinstance(cell, nn.Conv2dTranspose):  # weight (C_in, C_out / groups, kh, kw): each input pixel
            macs[0] += int(np.prod(inputs[0].shape)) * int(np.prod(weight[1:]))
        else:  # Conv2d (C_out, C_in / groups, kh, kw) and Dense (out, in): each output element
            macs[0] += int(np.prod(output.shape)) * int(np.prod(weight[1:]))

    for _, cell in model.cells_and_names():
        if isinstance(cell, (nn.Conv2d, nn.Conv2dTranspose, nn.Dense)):
            cell.register_forward_hook(hook)
    data = config["data"].get("init_args", {})
    hp = getattr(model, "hparams", {})
    frames = int(hp.get("in_frames", data.get("n_input", 10)))
    shape = tuple(hp.get("frame_shape", (1, 64, 64)))
    model(Tensor(np.zeros((1, frames, *shape), np.float32)))
    return params, macs[0] / 1e9


# == report ==========================================================================================================
def report(names, runs, costs, out, minutes):
    settings = sorted({(str(run["config"]["model"].get("init_args", {}).get("loss", "mse")),
                        str(run["config"]["trainer"].get("precision", "32")),
                        "lr_scheduler" in run["config"]) for run in runs.values()})
    trained = "; ".join(f"loss {loss}, precision {precision}, " + ("a learning-rate schedule" if scheduled else
                                                                     "each config's constant learning rate")
                        for loss, precision, scheduled in settings)
    budgets = sorted({float(run["config"]["trainer"]["max_time"]) / 60 for run in runs.values()})  # as run
    minutes = ", ".join(f"{m:g}" for m in budgets) if budgets else f"{minutes:g}"
    lines = [f"Equal wall time: {minutes} min of training each (compilation and validation included) on this "
             f"machine; {trained + '; ' if trained else ''}test on the same held-out videos.", "",
             "| model | parameters | GFLOPs / video | train videos/s | videos seen | test MSE | test MAE | test SSIM | cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    baselines, sequences = {}, None
    for name in names:
        run = runs.get(name)
        if run is None:
            lines.append(f"| {name} | | | | | (no finished run) | | | |")
            continue
        model = run["test"]["model"]
        params, gflops = costs[name]
        load = run["load"].get("cpu_per_wall_s")
        lines.append(f"| {name} | {params:,} | {gflops:.2f} | {run['videos_per_s']:.1f} | {run['videos']:,.0f} | "
                     f"{model['test_mse']:.2f} | {model['test_mae']:.2f} | {model['test_ssim']:.4f} | "
                     f"{'' if load is None else f'{load:.2f}'} |")
        baselines = baselines or run["test"].get("baselines", {})
        sequences = sequences or run["test"].get("sequences")
    for label, values in baselines.items():
        lines.append(f"| {label} | 0 | 0 | | | {values['mse']:.2f} | {values['mae']:.2f} | {values['ssim']:.4f} | |")
    if sequences:
        lines += ["", f"Test videos: {sequences:,}. Cores: CPU seconds the whole run (start-up, training, test) got "
                  "per wall-clock second (2 cores: near 2 means nothing else took CPU from it)."]
    text = "\n".join(lines) + "\n"
    with open(out + ".md", "w") as f:
        f.write(text)
    print(text)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in names:
        if name in runs and runs[name]["curve"]:
            curve = runs[name]["curve"]
            ax.plot([p["minutes"] for p in curve], [p["val_mse"] for p in curve], "o-", ms=2.5, label=name)
    for label, values in baselines.items():
        ax.axhline(values["mse"], ls=":", lw=1, color="gray")
        ax.text(0.01, values["mse"], label, va="bottom", fontsize=7, color="gray", transform=ax.get_yaxis_transform())
    ax.set_xlabel("training minutes (wall time, this machine)")
    ax.set_ylabel("validation MSE per frame")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    plt.close(fig)
    print(f"wrote {out}.md and {out}.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="configs to compare (default: the five *_mnist.yaml models)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall time per model (default 20)")
    parser.add_argument("--test-size", type=int, default=2000, help="test videos (default 2000)")
    parser.add_argument("--val-every", type=int, default=None,
                        help="validate every N training steps (default: the config's int val_check_interval, else "
                             f"{DEFAULT_VAL_EVERY})")
    parser.add_argument("--loss", default="mse", help="every model's loss, as in a config: mse, l1+l2, "
                        "'{mse: 1, l1: 0.5}' (default mse: the table compares models, not losses)")
    parser.add_argument("--precision", default="32", help="every model's trainer.precision (default 32)")
    parser.add_argument("--root", default=os.path.join("runs", "compare"), help="run folders (default runs/compare)")
    parser.add_argument("--out", default=os.path.join("docs", "compare"), help="OUT.md and OUT.png (docs/compare)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from --root")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.test_size < 1 or (args.val_every is not None and args.val_every < 1):
        parser.error(f"--minutes {args.minutes}, --test-size {args.test_size}, --val-every {args.val_every}: "
                     "must be positive")
    configs = [find_config(c) for c in (args.configs or [f"{m}_mnist.yaml" for m in DEFAULT_MODELS])]
    names = [model_name(c) for c in configs]
    if not args.report_only:
        for config in configs:
            run_one(config, args)
    runs, costs = {}, {}
    for name in names:
        run_dir = latest_run(args.root, name)
        if run_dir and os.path.isfile(os.path.join(run_dir, "test_metrics.json")):
            runs[name] = read_run(run_dir, name)
            costs[name] = count_cost(runs[name]["config"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    report(names, runs, costs, args.out, args.minutes)
    return 0 if len(runs) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
