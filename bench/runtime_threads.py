"""MindSpore's runtime thread count left to MindSpore against one set by ``mindspore.runtime.dispatch_threads_num``,
on a machine with few cores: a whole training step (forward, backward, Adam), steps/s and the ratio other/default.

The setting is per process and holds from the first graph on, so each figure comes from its own process: processes
alternate between the two settings (``--repeats`` each); every process builds the model as its experiment config does
(batch size, and bfloat16 convolutions when the config's precision is bf16-mixed), compiles and warms up on 8 steps,
then times ``--rounds`` blocks of ``--steps`` steps on 4 batches of Moving MNIST videos; a process's figure is the
median of its blocks, a setting's the median of its processes. Models: ``simvp`` the 2-hour run's SimVP-gSTA
(experiments/mmnist_2h_l1_01.yaml, bf16-mixed), ``convlstm`` the main job's (experiments/convlstm_mnist.yaml).

    python bench/runtime_threads.py [--threads 2] [--repeats 3] [--rounds 3] [--steps 10] [--models simvp,convlstm]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, loadavg, median, run_child  # noqa: E402

CONFIGS = {"simvp": "mmnist_2h_l1_01.yaml", "convlstm": "convlstm_mnist.yaml"}


def child(name, threads, rounds, steps):
    import _step_ab
    import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)
    import mindspore as ms
    from experiments.config import load_yaml
    from _common import ROOT

    ms.set_context(mode=ms.GRAPH_MODE)
    if threads:
        ms.runtime.dispatch_threads_num(threads)
    config = load_yaml(os.path.join(ROOT, "experiments", CONFIGS[name]))

    def prepare(module):
        if (config.get("trainer") or {}).get("precision") == "bf16-mixed":
            from msforge import layers

            layers.use_bfloat16_convolutions(module)

    step, batches = _step_ab.build(CONFIGS[name], prepare, data="videos")
    _step_ab.run_steps(step, batches, 8)  # compile and warm up
    blocks = [_step_ab.steps_per_second(step, batches, steps) for _ in range(rounds)]
    print(json.dumps({"steps_per_s": median(blocks), "loadavg": loadavg()}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="the other setting (the default is MindSpore's own)")
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.rounds, args.steps)
        return
    if args.threads < 1:
        raise SystemExit(f"runtime_threads: --threads {args.threads}: must be >= 1")
    result, lines = {}, []
    for name in args.models.split(","):
        if name not in CONFIGS:
            raise SystemExit(f"runtime_threads: --models {name!r}: expected some of {', '.join(CONFIGS)}")
        runs = {0: [], args.threads: []}
        loads = []
        for _ in range(args.repeats):
            for threads in runs:  # alternate, so a change of the machine's load hits both settings
                row = run_child(__file__, [name, threads, "--rounds", args.rounds, "--steps", args.steps],
                                f"runtime_threads: {name} with {threads or 'default'} threads")
                runs[threads].append(row["steps_per_s"])
                loads.append(row["loadavg"])
        default, other = median(runs[0]), median(runs[args.threads])
        result[f"runtime_threads_{name}_default_steps_per_s"] = default
        result[f"runtime_threads_{name}_{args.threads}_steps_per_s"] = other
        result[f"runtime_threads_{name}_ratio_{args.threads}_over_default"] = other / default
        lines.append(f"{name:9s} default {default:6.2f} steps/s, {args.threads} threads {other:6.2f} steps/s: ratio "
                     f"{other / default:.3f} (processes: {[round(v, 2) for v in runs[0]]} vs "
                     f"{[round(v, 2) for v in runs[args.threads]]}; load {min(loads)}-{max(loads)})")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
