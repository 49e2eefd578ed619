"""What bf16-mixed buys on this CPU (issue 15, item 1): a whole training step (forward, backward, Adam) with
msforge.layers.Conv2d multiplying in bfloat16 (``Trainer(precision="bf16-mixed")`` on a CPU with AVX512_BF16) against
the same step in float32, steps/s and the ratio bf16/fp32.

Models, as their experiment configs build them: ``convlstm`` is the main job's (experiments/convlstm_mnist.yaml,
batch 16), ``simvp`` the 2-hour run's SimVP-gSTA (experiments/mmnist_2h_lr3e-3.yaml, batch 16). One process per
model holds both versions (same initial weights, each its own compiled step); blocks of ``--steps`` steps alternate
between them for ``--rounds`` rounds after a warm-up that compiles; each figure is the median over rounds. Also
prints each version's loss after the same steps on the same batches, to show the two train alike.

    python bench/bf16_step.py [--rounds 5] [--steps 20] [--models convlstm,simvp] [--json]
"""
import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, loadavg, median, run_child  # noqa: E402

CONFIGS = {"convlstm": "convlstm_mnist.yaml", "simvp": "mmnist_2h_lr3e-3.yaml"}


def build(config_name, prepare=None):
    """(TrainStep, ready batches) for the model of experiments/``config_name``; ``prepare(module)`` runs before the
    step is built (bench/depthwise.py uses it too)."""
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
    rng = np.random.default_rng(0)
    batches = [ms.mutable((Tensor(rng.random(size=(batch, *clip)).astype(np.float32)),)) for _ in range(4)]
    return step, batches


def bfloat16(module):
    from msforge import layers

    if not layers.use_bfloat16_convolutions(module):
        raise SystemExit("bf16_step: no bfloat16 convolutions here (the CPU needs AVX512_BF16, and the kernels a "
                         "C++ compiler)")


def child(name, rounds, steps):
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    versions = {"fp32": build(CONFIGS[name]), "bf16": build(CONFIGS[name], bfloat16)}
    losses = {}
    for key, (step, batches) in versions.items():  # compile, warm up, and the loss after the same 8 steps
        for i in range(8):
            out = step(True, batches[i % len(batches)])[0]
        loss = out[0] if isinstance(out, tuple) else out
        losses[key] = float(loss.asnumpy())
    timings = {key: [] for key in versions}
    for _ in range(rounds):
        for key, (step, batches) in versions.items():
            t0 = time.perf_counter()
            for i in range(steps):
                out = step(True, batches[i % len(batches)])[0]
            (out[0] if isinstance(out, tuple) else out).asnumpy()
            timings[key].append(steps / (time.perf_counter() - t0))
    print(json.dumps({"model": name, **{key: median(v) for key, v in timings.items()},
                      "loss_after_8_steps": losses, "loadavg": loadavg()}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rounds, args.steps)
        return
    result, lines = {}, []
    for name in args.models.split(","):
        if name not in CONFIGS:
            raise SystemExit(f"bf16_step: --models {name!r}: expected some of {', '.join(CONFIGS)}")
        row = run_child(__file__, [name, "--rounds", args.rounds, "--steps", args.steps], f"bf16_step: {name}")
        ratio = row["bf16"] / row["fp32"]
        result[f"bf16_step_{name}_fp32_steps_per_s"] = row["fp32"]
        result[f"bf16_step_{name}_bf16_steps_per_s"] = row["bf16"]
        result[f"bf16_step_{name}_ratio_bf16_over_fp32"] = ratio
        loss = row["loss_after_8_steps"]
        lines.append(f"{name:9s} fp32 {row['fp32']:6.2f} steps/s, bf16 {row['bf16']:6.2f} steps/s: ratio {ratio:.3f}; "
                     f"loss after 8 steps fp32 {loss['fp32']:.5f}, bf16 {loss['bf16']:.5f} "
                     f"(load average {row['loadavg']})")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
