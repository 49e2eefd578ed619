"""msforge.layers vs the MindSpore layers they replace, forward + backward on the ConvLSTM models' and SimVP's shapes,
A/B in one process, graph mode.

Cases (``--cases``, comma-separated; default all):

    groupnorm_default    GroupNorm, 16x128x16x16, 4 groups (the default experiment's gates, batch 16)
    groupnorm_cpu_small  GroupNorm, 8x256x16x16, 8 groups (64-channel cells, batch 8)
    conv_default_enc     Conv2d 3x3, 16x48x16x16 -> 128 (the default experiment's first cell: 16 + 32 channels in)
    conv_default         Conv2d 3x3, 16x64x16x16 -> 128 (its other cells: 32 + 32 in)
    conv_cpu_small       Conv2d 5x5, 8x128x16x16 -> 256 (64-channel cells, batch 8)
    lstm_gates_default   LSTMGates vs the same formula in MindSpore ops, gates 16x128x16x16 and c 16x32x16x16
                         (the default experiment's cells), both taken from one 16x160x16x16 input
    dw_simvp_5x5         depthwise Conv2d 5x5, 16x128x8x8 (SimVP-gSTA's translator, the 2-hour run's model)
    dw_simvp_7x7_d3      depthwise Conv2d 7x7 dilated by 3, 16x128x8x8 (the same; its outer taps read only padding)
    dw_simvp_mlp_3x3     depthwise Conv2d 3x3, 16x512x8x8 (the same, its MLP)

Each side computes ``sum(layer(x) * w)`` and its gradients with respect to x and the layer's Parameters, from the
same Parameter values; rounds alternate the order; prints median milliseconds per forward + backward and the ratio.

    python bench/layers.py [--cases groupnorm_default,conv_default] [--rounds 5] [--reps 20] [--json]
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
from mindspore import Tensor, nn, ops  # noqa: E402

from msforge import layers  # noqa: E402


def group_norm(groups):
    return lambda cls, shape: cls(groups, shape[1])


def conv(out_channels, k):
    return lambda cls, shape: cls(shape[1], out_channels, k, pad_mode="pad", padding=k // 2, has_bias=True)


def depthwise(k, dilation=1):
    return lambda cls, shape: cls(shape[1], shape[1], k, pad_mode="pad", padding=dilation * (k // 2),
                                  dilation=dilation, group=shape[1], has_bias=True)


class GatesFromInput(nn.Cell):
    """LSTMGates on one input: its first 4/5 of the channels are the gates, the rest the cell state; returns
    ``concat(h', c')``. The slicing and concat cost both sides the same."""

    def __init__(self, hidden, use_kernel):
        super().__init__()
        self.hidden = hidden
        self.gates = layers.LSTMGates(use_kernel=use_kernel)
        self.use_kernel = self.gates.use_kernel

    def construct(self, x):
        h, c = self.gates(x[:, :4 * self.hidden], x[:, 4 * self.hidden:])
        return ops.concat((h, c), 1)


def lstm_gates(cls, shape):
    return GatesFromInput(shape[1] // 5, use_kernel=cls is layers.LSTMGates)


# name -> (input shape, MindSpore layer class, msforge layer class, builder(cls, shape))
CASES = {
    "groupnorm_default": ((16, 128, 16, 16), nn.GroupNorm, layers.GroupNorm, group_norm(4)),
    "groupnorm_cpu_small": ((8, 256, 16, 16), nn.GroupNorm, layers.GroupNorm, group_norm(8)),
    "conv_default_enc": ((16, 48, 16, 16), nn.Conv2d, layers.Conv2d, conv(128, 3)),
    "conv_default": ((16, 64, 16, 16), nn.Conv2d, layers.Conv2d, conv(128, 3)),
    "conv_cpu_small": ((8, 128, 16, 16), nn.Conv2d, layers.Conv2d, conv(256, 5)),
    "lstm_gates_default": ((16, 160, 16, 16), None, layers.LSTMGates, lstm_gates),
    "dw_simvp_5x5": ((16, 128, 8, 8), nn.Conv2d, layers.Conv2d, depthwise(5)),
    "dw_simvp_7x7_d3": ((16, 128, 8, 8), nn.Conv2d, layers.Conv2d, depthwise(7, 3)),
    "dw_simvp_mlp_3x3": ((16, 512, 8, 8), nn.Conv2d, layers.Conv2d, depthwise(3)),
}


class WeightedSum(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, x, w):
        return (self.layer(x) * w).sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20, help="forward + backward calls per side per round")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    names = args.cases.split(",")
    for name in names:
        if name not in CASES:
            raise SystemExit(f"error: unknown case {name!r}; choose from {', '.join(CASES)}")
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    results = {}
    for name in names:
        shape, reference_cls, msforge_cls, make = CASES[name]
        reference, fast = make(reference_cls, shape), make(msforge_cls, shape)
        if not fast.use_kernel:
            raise SystemExit(f"error: {msforge_cls.__name__} could not use its kernel for {name} (see the warning)")
        ms.load_param_into_net(fast, {p.name: p for p in reference.get_parameters()})
        x = Tensor(rng.normal(size=shape).astype(np.float32))
        w = Tensor(rng.normal(size=reference(x).shape).astype(np.float32))
        sides = {}
        for side, layer in (("mindspore", reference), ("msforge", fast)):
            net = WeightedSum(layer)
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
        results[name] = {"shape": list(shape), "mindspore_ms": round(ms_ms, 2), "msforge_ms": round(forge_ms, 2),
                         "speedup": round(ms_ms / forge_ms, 2), "max_abs_diff_dx": diff}
    results["load_average"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(results))
        return
    for name in names:
        r = results[name]
        print(f"{name:20s} {'x'.join(map(str, r['shape'])):14s} MindSpore {r['mindspore_ms']:6.2f} ms, msforge "
              f"{r['msforge_ms']:6.2f} ms per forward+backward: {r['speedup']:.2f}x  (max |dx diff| "
              f"{r['max_abs_diff_dx']:.1e})")
    print(f"load average {results['load_average']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
