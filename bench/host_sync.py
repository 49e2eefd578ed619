"""What the per-step host sync costs (issue 15, item 3): msforge's compiled TrainStep over ready batches, its outputs
read back as floats after every step (what the Trainer does today) against read back only every ``--every`` steps
(kept as Tensors in between, as a deferred-sync loop would), steps/s and the ratio deferred/every-step.

Two models: the tiny MLP of bench/tiny.py (32-64-1, batch 64: the step is short, host costs show most) and the main
job's ConvLSTMModule as experiments/convlstm_mnist.yaml configures it (dict output: loss, mse, mae). One process per
model; the two loops alternate block by block (``--steps`` steps each, ``--rounds`` rounds) after a warm-up that
compiles; each figure is the median over rounds.

    python bench/host_sync.py [--rounds 5] [--steps 400] [--every 50] [--json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, loadavg, median, model_spec, run_child  # noqa: E402
from tiny import mlp_module  # noqa: E402

MODELS = ("tiny", "convlstm")


def build(name):
    """(TrainStep, list of ready batches as tuples of Tensors) for ``name``."""
    sys.path.insert(0, ROOT)
    import msforge  # noqa: F401  (caps oneDNN's ISA before mindspore loads)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from msforge.train_step import TrainStep

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    rng = np.random.default_rng(0)
    if name == "tiny":
        module = mlp_module()
        optimizer = module.configure_optimizers()
        data = [(rng.normal(size=(64, 32)), rng.normal(size=(64, 1))) for _ in range(16)]
    else:
        from models.convlstm import ConvLSTMModule

        kwargs, batch = model_spec("default")
        module = ConvLSTMModule(**kwargs)
        optimizer = module.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        clip = (module.in_frames + module.out_frames, *module.frame_shape)
        data = [(rng.random(size=(batch, *clip)),) for _ in range(4)]
    step = TrainStep(module, optimizer)
    step.set_train(True)
    batches = [ms.mutable(tuple(Tensor(a.astype(np.float32)) for a in b)) for b in data]
    return step, batches


def to_floats(out):
    values = out if isinstance(out, tuple) else (out,)
    return [float(v.asnumpy()) for v in values]


def child(name, rounds, steps, every):
    step, batches = build(name)
    n = len(batches)
    for i in range(2 * n):  # compile and warm up
        to_floats(step(True, batches[i % n])[0])
    timings = {"every_step": [], "deferred": []}
    for _ in range(rounds):
        for mode in timings:
            pending = []
            t0 = time.perf_counter()
            for i in range(steps):
                out = step(True, batches[i % n])[0]
                if mode == "every_step":
                    to_floats(out)
                else:
                    pending.append(out)
                    if len(pending) == every:
                        for o in pending:
                            to_floats(o)
                        pending = []
            for o in pending:
                to_floats(o)
            timings[mode].append(steps / (time.perf_counter() - t0))
    print(json.dumps({"model": name, **{mode: median(v) for mode, v in timings.items()}, "loadavg": loadavg()}),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400, help="steps per block (the ConvLSTM runs a tenth of them)")
    parser.add_argument("--every", type=int, default=50, help="deferred: read outputs back every this many steps")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        steps = args.steps if args.child == "tiny" else max(args.steps // 10, args.every)
        child(args.child, args.rounds, steps, args.every)
        return
    result, lines = {}, []
    for name in args.models.split(","):
        row = run_child(__file__, [name, "--rounds", args.rounds, "--steps", args.steps, "--every", args.every],
                        f"host_sync: {name}")
        ratio = row["deferred"] / row["every_step"]
        result[f"host_sync_{name}_every_step_steps_per_s"] = row["every_step"]
        result[f"host_sync_{name}_deferred_steps_per_s"] = row["deferred"]
        result[f"host_sync_{name}_ratio_deferred_over_every_step"] = ratio
        lines.append(f"{name:9s} outputs read every step {row['every_step']:8.1f} steps/s, every {args.every} steps "
                     f"{row['deferred']:8.1f} steps/s: ratio {ratio:.3f} (load average {row['loadavg']})")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
