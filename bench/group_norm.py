"""GroupNorm forward + backward: MindSpore 2.10's CPU kernels (nn.GroupNorm) vs msforge.layers.GroupNorm's compiled
C++ kernel, on the gates tensors of the ConvLSTM models, A/B in one process, graph mode.

Shapes: "default" = 16x128x16x16, 4 groups (the default experiment's cells, batch 16); "cpu_small" = 8x256x16x16,
8 groups (64-channel cells, batch 8). Each side computes ``sum(GroupNorm(x) * w)`` and its gradients with respect to
x, gamma and beta; rounds alternate the order; prints median milliseconds and the ratio.

    python bench/group_norm.py [--rounds 5] [--reps 20] [--json]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import msforge  # noqa: E402,F401  (before mindspore: caps oneDNN's ISA)
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from msforge.layers import GroupNorm  # noqa: E402

SHAPES = {"default": ((16, 128, 16, 16), 4), "cpu_small": ((8, 256, 16, 16), 8)}


class WeightedSum(nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x, w):
        return (self.norm(x) * w).sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20, help="forward + backward calls per side per round")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    results = {}
    for name, (shape, groups) in SHAPES.items():
        x = Tensor(rng.normal(size=shape).astype(np.float32))
        w = Tensor(rng.normal(size=shape).astype(np.float32))
        sides = {}
        for side, norm in (("mindspore", nn.GroupNorm(groups, shape[1])), ("msforge", GroupNorm(groups, shape[1]))):
            if side == "msforge" and not norm.use_kernel:
                raise SystemExit("error: msforge.layers.GroupNorm could not build its kernel (see the warning)")
            net = WeightedSum(norm)
            grad_fn = ms.value_and_grad(net, grad_position=0, weights=net.trainable_params())
            grad_fn(x, w)[1][0].asnumpy()  # compile
            sides[side] = grad_fn
        diff = float(np.abs(sides["mindspore"](x, w)[1][0].asnumpy() - sides["msforge"](x, w)[1][0].asnumpy()).max())
        times = {side: [] for side in sides}
        for r in range(args.rounds):
            for side in (("mindspore", "msforge") if r % 2 == 0 else ("msforge", "mindspore")):
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    sides[side](x, w)[1][0].asnumpy()
                times[side].append((time.perf_counter() - t0) / args.reps * 1000)
        ms_ms, forge_ms = statistics.median(times["mindspore"]), statistics.median(times["msforge"])
        results[name] = {"shape": list(shape), "groups": groups, "mindspore_ms": round(ms_ms, 2),
                         "msforge_ms": round(forge_ms, 2), "speedup": round(ms_ms / forge_ms, 2),
                         "max_abs_diff_dx": diff}
    results["load_average"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(results))
        return
    for name in SHAPES:
        r = results[name]
        print(f"{name:9s} {'x'.join(map(str, r['shape']))} G={r['groups']}: MindSpore {r['mindspore_ms']:.2f} ms, "
              f"msforge {r['msforge_ms']:.2f} ms per forward+backward: {r['speedup']:.2f}x  "
              f"(max |dx diff| {r['max_abs_diff_dx']:.1e})")
    print(f"load average {results['load_average']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
