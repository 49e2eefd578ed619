"""What msforge's own depthwise loops buy over oneDNN: a whole training step (forward, backward, Adam) of the 2-hour
run's SimVP-gSTA (experiments/mmnist_2h_l1_025.yaml, batch 16) and of TAU (experiments/tau_mnist.yaml), with their
stride-1 depthwise convolutions (the translator's 5x5, 7x7 dilated by 3 and 3x3) on ``msforge.layers.Conv2d``'s
direct loops (the default) against the same step with them on oneDNN (``Conv2d.set_direct_depthwise(False)``),
steps/s and the ratio direct/oneDNN.

One process per model holds both versions (same initial weights, each its own compiled step); blocks of ``--steps``
steps alternate between them for ``--rounds`` rounds after a warm-up that compiles; each figure is the median over
rounds. Also prints each version's loss after the same 8 steps on the same batches: the two compute the same function.

    python bench/depthwise.py [--rounds 5] [--steps 20] [--models simvp,tau] [--json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bf16_step  # noqa: E402
from _common import emit, loadavg, median, run_child  # noqa: E402

CONFIGS = {"simvp": "mmnist_2h_l1_025.yaml", "tau": "tau_mnist.yaml"}


def on_onednn(module):
    from msforge import layers

    convs = [conv for conv in layers.kernel_convolutions(module) if conv.depthwise]
    if not convs:
        raise SystemExit("depthwise: the model has no depthwise convolution on msforge's kernel (it needs a C++ "
                         "compiler)")
    for conv in convs:
        conv.set_direct_depthwise(False)


def child(name, rounds, steps):
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    versions = {"onednn": bf16_step.build(CONFIGS[name], on_onednn), "direct": bf16_step.build(CONFIGS[name])}
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
            raise SystemExit(f"depthwise: --models {name!r}: expected some of {', '.join(CONFIGS)}")
        row = run_child(__file__, [name, "--rounds", args.rounds, "--steps", args.steps], f"depthwise: {name}")
        ratio = row["direct"] / row["onednn"]
        result[f"depthwise_{name}_onednn_steps_per_s"] = row["onednn"]
        result[f"depthwise_{name}_direct_steps_per_s"] = row["direct"]
        result[f"depthwise_{name}_ratio_direct_over_onednn"] = ratio
        loss = row["loss_after_8_steps"]
        lines.append(f"{name:6s} oneDNN {row['onednn']:6.2f} steps/s, direct {row['direct']:6.2f} steps/s: ratio "
                     f"{ratio:.3f}; loss after 8 steps oneDNN {loss['onednn']:.6f}, direct {loss['direct']:.6f} "
                     f"(load average {row['loadavg']})")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
