"""How ``Trainer(steps_per_execution=N)`` should loop over its N steps in one graph: msforge's ``MultiStep`` (the first
step, then a graph ``while`` loop over the other N-1) against the same N steps unrolled in the graph (N copies of the
step: what ``MultiStep`` did before), steps/s and the ratio loop/unrolled, for each N of ``--spe``.

The model is bench/tiny.py's MLP (32-64-1, batch 64, Adam), where the graph's own cost per step is all there is.
Both sides run the same compiled ``TrainStep`` code over the same stacked ready batches (no Trainer, no host work
but the call), from the same initial weights; one process, the sides alternating block by block (``--steps`` steps
each, ``--rounds`` rounds) after a call that compiles; each figure is the median over rounds. The losses of the two
sides' first execution are printed (they train the same).

    python bench/multistep.py [--spe 4,32] [--rounds 5] [--steps 3200] [--json]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, loadavg, median  # noqa: E402
from tiny import batches, mlp_module  # noqa: E402

sys.path.insert(0, ROOT)
import msforge  # noqa: E402,F401  (caps oneDNN's ISA before mindspore loads)
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, ops  # noqa: E402

from msforge.train_step import MultiStep, TrainStep  # noqa: E402


class UnrolledMultiStep(MultiStep):
    """The N steps written out one after another in the graph (a Python loop over a constant N)."""

    def construct(self, is_updates, lrs, batches):
        outputs, skipped, scale = (), ops.zeros((), ms.int32), ops.ones((), ms.float32)
        for i in range(self.steps):
            batch = ()
            for item in batches:
                batch = batch + (item[i],)
            out, finite, scale = self.step.step(True, batch)
            skipped = skipped + ops.logical_not(finite).astype(ms.int32)
            outputs = outputs + (out,)
        return ops.stack(outputs), skipped, scale


def build(cls, n, weights):
    module = mlp_module()
    for p, value in zip(module.trainable_params(), weights):
        p.set_data(Tensor(value))
    multi = cls(TrainStep(module, module.configure_optimizers()), n)
    multi.set_train(True)
    return multi


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--spe", default="4,32", help="steps per execution to compare, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3200, help="steps per block (a multiple of each N)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    data = batches()
    weights = [p.asnumpy().copy() for p in mlp_module().trainable_params()]
    result, lines = {"multistep_load_average_start": loadavg()}, []
    for n in (int(v) for v in args.spe.split(",")):
        groups = [ms.mutable(tuple(Tensor(np.stack([data[(g * n + i) % len(data)][k] for i in range(n)]))
                                   for k in range(2))) for g in range(max(1, len(data) // n))]
        sides = {"loop": build(MultiStep, n, weights), "unrolled": build(UnrolledMultiStep, n, weights)}
        first_losses = {}
        for name, multi in sides.items():
            t0 = time.perf_counter()
            first_losses[name] = multi(None, None, groups[0])[0].asnumpy()
            result[f"multistep_n{n}_{name}_first_call_s"] = round(time.perf_counter() - t0, 2)
        rates = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, multi in sides.items():
                calls = args.steps // n
                t0 = time.perf_counter()
                for c in range(calls):
                    out = multi(None, None, groups[c % len(groups)])[0]
                out.asnumpy()
                rates[name].append(calls * n / (time.perf_counter() - t0))
        loop, unrolled = median(rates["loop"]), median(rates["unrolled"])
        same = bool(np.array_equal(first_losses["loop"], first_losses["unrolled"]))
        result.update({f"multistep_n{n}_loop_steps_per_s": round(loop, 1),
                       f"multistep_n{n}_unrolled_steps_per_s": round(unrolled, 1),
                       f"multistep_n{n}_ratio_loop_over_unrolled": round(loop / unrolled, 3),
                       f"multistep_n{n}_first_losses_equal": same})
        lines.append(f"N={n:3d}: while loop {loop:8.1f} steps/s, unrolled {unrolled:8.1f} steps/s: ratio "
                     f"{loop / unrolled:.2f}; first call (compile) {result[f'multistep_n{n}_loop_first_call_s']} s "
                     f"vs {result[f'multistep_n{n}_unrolled_first_call_s']} s; first execution's losses "
                     f"{'equal' if same else 'DIFFER'}")
    result["multistep_load_average_end"] = loadavg()
    lines.append(f"load average {result['multistep_load_average_start']} -> {result['multistep_load_average_end']}")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
