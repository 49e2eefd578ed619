"""Formulations of the ConvLSTM's step in MindSpore, A/B in one process: which ones train faster on this CPU.

Each variant is the EncoderForecaster of models/convlstm.py with one piece written differently; all start from the
same weights (the forward outputs are compared, printed as "max diff") and train with the same TrainOneStepCell, MSE
and Adam on the same random batch. Variants (join with "_", e.g. ``split_zero``); GroupNorm is MindSpore's
``nn.GroupNorm``, convolutions are MindSpore's ``nn.Conv2d`` kernels and the gates MindSpore's elementwise ops
unless a variant names another:

    base     models/convlstm.py as it was before this benchmark: MindSpore's nn.GroupNorm, one conv over
             concat(x, h) per step, frames taken by a strided slice ``seq[:, t]`` per step
    fastgn   GroupNorm written in plain ops (reshape, mean, rsqrt) instead of MindSpore's GroupNorm kernel
    mmgn     GroupNorm whose means are matmuls with a ones vector (MatMul is MindSpore's fastest CPU kernel)
    split    conv(concat(x, h)) = conv_x(x) + conv_h(h) with the weight sliced: conv_x runs once over all B*T frames
             before the time loop; the gates are unstacked once instead of sliced per step
    unstack  one unstack of each level's sequence instead of a slice per time step (models/convlstm.py does this now)
    zero     (with split) the forecaster's top cell is fed zeros: its conv_x is its bias, skip the conv
    kernelgn msforge.layers.GroupNorm's compiled C++ kernel (models/convlstm.py uses it now)
    dnnlconv msforge.layers.Conv2d's kernels: oneDNN on its blocked layout (models/convlstm.py uses them now)
    fusedgates msforge.layers.LSTMGates' kernel: the gate nonlinearities and c', h' in one pass each way
             (models/convlstm.py uses it now; without it, the same formula in MindSpore ops)
    nonorm   no GroupNorm at all (a different network: the ceiling a faster GroupNorm could reach)

Rounds alternate the variants' order (A B C, C B A, ...); each round times ``--steps`` steps per variant. Prints the
median seconds per step and the speed ratio to the first variant.

    python bench/formulations.py [--model default|cpu_small] [--batch 16] [--variants base,split_zero,nonorm]
                                 [--rounds 4] [--steps 4] [--graph-kernel]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import msforge  # noqa: E402,F401  (before mindspore: caps oneDNN's ISA)
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402

from msforge.layers import Conv2d, GroupNorm, LSTMGates  # noqa: E402

from models.convlstm import EncoderForecaster, cpu_small_config, tanh  # noqa: E402


class PlainOpsGroupNorm(nn.GroupNorm):
    def construct(self, x):
        n, c, h, w = x.shape
        g = x.reshape(n, self.num_groups, -1)
        mean = g.mean(-1, keep_dims=True)
        d = g - mean
        var = (d * d).mean(-1, keep_dims=True)
        y = (d * ops.rsqrt(var + self.eps)).reshape(n, c, h, w)
        return y * self.gamma.reshape(1, c, 1, 1) + self.beta.reshape(1, c, 1, 1)


class MatmulGroupNorm(nn.GroupNorm):
    def construct(self, x):
        n, c, h, w = x.shape
        length = c // self.num_groups * h * w
        g = x.reshape(n * self.num_groups, length)
        ones = ops.ones((length, 1), ms.float32) / length
        mean = ops.matmul(g, ones)
        d = g - mean
        var = ops.matmul(d * d, ones)
        y = (d * ops.rsqrt(var + self.eps)).reshape(n, c, h, w)
        return y * self.gamma.reshape(1, c, 1, 1) + self.beta.reshape(1, c, 1, 1)


def replace_norms(net, cls):
    for cell in list(net.enc_cells) + list(net.fc_cells):
        if cell.norm is not None:
            old = cell.norm
            cell.norm = cls(old.num_groups, old.num_channels)
            cell.norm.gamma, cell.norm.beta = old.gamma, old.beta  # the same Parameters: same weights


class SplitConvEF(EncoderForecaster):
    """The input half of each cell's gate conv runs once over all frames; skipped for a cell with ``zero_input``."""

    def _unroll(self, cell, seq, state):
        b, t, c, h, w = seq.shape
        k = cell.conv.kernel_size[0]
        wx, wh = cell.conv.weight[:, :c], cell.conv.weight[:, c:]
        bias = cell.conv.bias.reshape(1, -1, 1, 1)
        if cell.zero_input:
            xs = [bias] * t  # conv_x(zeros) + bias
        else:
            xg = ops.conv2d(seq.reshape(b * t, c, h, w), wx, pad_mode="pad", padding=k // 2) + bias
            xs = ops.unstack(xg.reshape(b, t, -1, h, w), 1)
        hh, cc = state
        outputs = []
        for i in range(t):
            gates = xs[i] + ops.conv2d(hh, wh, pad_mode="pad", padding=k // 2)
            if cell.norm is not None:
                gates = cell.norm(gates)
            ig, f, g, o = ops.split(gates, cell.hidden, 1)
            cc = ops.sigmoid(f) * cc + ops.sigmoid(ig) * tanh(g)
            hh = ops.sigmoid(o) * tanh(cc)
            outputs.append(hh)
        return ops.stack(outputs, 1), (hh, cc)


class SlicedEF(EncoderForecaster):
    """models/convlstm.py's time loop before this benchmark: a strided slice ``seq[:, t]`` per time step."""

    def _unroll(self, cell, seq, state):
        outputs = []
        for t in range(seq.shape[1]):
            state = cell(seq[:, t], *state)
            outputs.append(state[0])
        return ops.stack(outputs, 1), state


class MSELoss(nn.Cell):
    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x, y):
        d = self.net(x) - y
        return (d * d).mean()


def build(variant, config):
    parts = set(variant.split("_"))
    unknown = parts - {"base", "fastgn", "mmgn", "kernelgn", "split", "zero", "unstack", "nonorm", "dnnlconv",
                     "fusedgates"}
    if unknown or ("zero" in parts and "split" not in parts) or {"split", "unstack"} <= parts:
        raise SystemExit(f"error: variant {variant!r}: unknown part(s) {sorted(unknown)}, 'zero' without 'split' or "
                         "'split' with 'unstack' (split unstacks already)")
    net = (SplitConvEF if "split" in parts else EncoderForecaster if "unstack" in parts else SlicedEF)(**config)
    for cell in list(net.enc_cells) + list(net.fc_cells):
        cell.zero_input = False  # a constant of the compiled graph
    net.fc_cells[net.levels - 1].zero_input = "zero" in parts and not net.feed_predictions
    norms = {"fastgn": PlainOpsGroupNorm, "mmgn": MatmulGroupNorm, "kernelgn": GroupNorm}
    chosen = [norms[p] for p in parts if p in norms]
    replace_norms(net, chosen[0] if chosen else nn.GroupNorm)  # default: MindSpore's own GroupNorm kernel
    if "nonorm" in parts:
        for cell in list(net.enc_cells) + list(net.fc_cells):
            cell.norm = None
    for _, cell in net.cells_and_names():
        if isinstance(cell, Conv2d):  # read when the graph is compiled: False runs nn.Conv2d's own construct
            cell.use_kernel = cell.use_kernel and "dnnlconv" in parts
        if isinstance(cell, LSTMGates):
            cell.use_kernel = cell.use_kernel and "fusedgates" in parts
    return net


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "cpu_small"), default="default",
                        help="default: 2+2 ConvLSTM(32) 3x3 (experiments/convlstm_mnist.yaml); cpu_small: 64ch 5x5")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--variants", default="base,kernelgn,fastgn,mmgn,split_zero,nonorm")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--graph-kernel", action="store_true", help="set_context(enable_graph_kernel=True)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    if args.graph_kernel:
        ms.set_context(enable_graph_kernel=True)
    config = cpu_small_config() if args.model == "cpu_small" else cpu_small_config(hidden=(32, 32), kernel_sizes=(3, 3))
    variants = args.variants.split(",")
    rng = np.random.default_rng(0)
    x = Tensor(rng.random((args.batch, 10, 1, 64, 64), dtype=np.float32))
    y = Tensor(rng.random((args.batch, 10, 1, 64, 64), dtype=np.float32))
    reference, steps = None, {}
    for variant in variants:
        ms.set_seed(0)
        net = build(variant, config)
        out = net(x).asnumpy()
        reference = out if reference is None else reference
        step = nn.TrainOneStepCell(MSELoss(net), nn.Adam(net.trainable_params(), 1e-3))
        t0 = time.perf_counter()
        step(x, y).asnumpy()
        print(f"{variant}: max diff of the output vs {variants[0]} {float(np.abs(out - reference).max()):.2e}, "
              f"compile + first step {time.perf_counter() - t0:.1f} s", flush=True)
        steps[variant] = step
    times = {v: [] for v in variants}
    for r in range(args.rounds):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[variant](x, y).asnumpy()
            times[variant].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times[variants[0]])
    print(f"load average {os.getloadavg()[0]:.2f}")
    for variant in variants:
        m = statistics.median(times[variant])
        print(f"{args.model} batch {args.batch} {variant:20s} {m:.3f} s/step   speed vs {variants[0]}: {base / m:.2f}x")


if __name__ == "__main__":
    main()
