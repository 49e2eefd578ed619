"""Model FLOPs utilisation: the ConvLSTM's FLOPs per training step / step time, against this machine's measured peak.

The model: ``--model default`` (the default experiment's, built from experiments/convlstm_mnist.yaml's model
arguments, at its batch size), or the ``cpu_small`` / ``seed`` presets (batch 8 / 2).

FLOPs are counted from the layer shapes of ``models/convlstm.py``'s EncoderForecaster (any preset): every conv as a
direct convolution, ``2*K*K*Cin*Cout*Hout*Wout`` per frame (a transposed conv: ``2*K*K*Cin*Cout*Hin*Win``), and
x3 for a training step (forward + gradients of inputs + gradients of weights). Elementwise work (GroupNorm, gates,
LeakyReLU, loss, Adam) is NOT in the model FLOPs; an estimate of it is printed beside them (well under 1%). The
layer list is checked against the model: its parameter count must equal ``count_parameters(model)``.

Peak: a 2048x2048 fp32 matmul in MindSpore graph mode on the same cores (``2*n^3`` FLOPs per call, median of
``--matmuls`` calls). Step time and peak alternate (A/B) in one process: training pauses in a batch-end hook every
``--steps`` steps and the matmul is timed there. Prints GFLOP/s, the peak, and the fraction of peak (MFU). A
fraction above 1 is possible: oneDNN may run a 5x5 conv with fewer multiplications than a direct convolution.

    python bench/mfu.py [--model default|cpu_small|seed] [--batch N] [--blocks 3] [--steps 4] [--json]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msforge  # noqa: F401,E402  (before mindspore: caps oneDNN's ISA)
import numpy as np  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402

from _common import MODEL_CHOICES, emit, loadavg, median, model_spec  # noqa: E402
from models.convlstm import ConvLSTMModule, count_parameters  # noqa: E402
from msforge import Callback, Trainer  # noqa: E402


def conv_layers(config, height=64, width=64, n_input=10):
    """Every conv of ``EncoderForecaster(**config)`` as (name, kernel, cin, cout, out_h, out_w, calls per sample,
    transposed); GroupNorm parameters as (name, channels)."""
    p = config["patch"]
    hidden, kernels = tuple(config["hidden"]), config["kernel_sizes"]
    levels = len(hidden)
    kernels = (kernels,) * levels if isinstance(kernels, int) else tuple(kernels)
    downsample = tuple(config.get("downsample") or (False,) * levels)
    n_target = config["n_target"]
    frame_ch = config["in_channels"] * p * p
    top_factor = 2 ** sum(downsample)
    fc_in = config.get("forecaster_input_channels") or frame_ch * top_factor ** 2
    h, w = height // p, width // p
    convs, norms = [], []
    ch = frame_ch
    if config.get("stem_channels"):
        convs.append(("stem", 3, ch, config["stem_channels"], h, w, n_input, False))
        ch = config["stem_channels"]
    res = []
    for level in range(levels):
        if downsample[level]:
            h, w = h // 2, w // 2
            convs.append((f"down{level}", 3, ch, ch, h, w, n_input, False))
        res.append((h, w))
        k, hid = kernels[level], hidden[level]
        convs.append((f"enc{level}", k, ch + hid, 4 * hid, h, w, n_input, False))
        norms.append((f"enc{level}.norm", 4 * hid))
        ch = hid
    for level in range(levels - 1, -1, -1):
        h, w = res[level]
        k, hid = kernels[level], hidden[level]
        cin = fc_in if level == levels - 1 else hidden[level + 1]
        convs.append((f"fc{level}", k, cin + hid, 4 * hid, h, w, n_target, False))
        norms.append((f"fc{level}.norm", 4 * hid))
        if downsample[level]:  # 4x4 stride-2 transposed conv; counted on its input grid
            convs.append((f"up{level}", 4, hid, hid, h, w, n_target, True))
    h, w = res[0]
    ch = hidden[0]
    if config.get("head_channels"):
        convs.append(("head", 3, ch, config["head_channels"], h, w, n_target, False))
        ch = config["head_channels"]
    convs.append(("out", 1, ch, frame_ch, h, w, n_target, False))
    return convs, norms


def count_flops(config, batch):
    convs, norms = conv_layers(config)
    forward = sum(2 * k * k * cin * cout * oh * ow * calls for _, k, cin, cout, oh, ow, calls, _ in convs)
    params = sum(k * k * cin * cout + cout for _, k, cin, cout, *_ in convs) + sum(2 * c for _, c in norms)
    # elementwise estimate per cell step: GroupNorm ~8 FLOPs per gate element, gates ~25 per hidden element
    elementwise = 0
    for name, k, cin, cout, oh, ow, calls, _ in convs:
        if name.startswith(("enc", "fc")):
            elementwise += (8 * cout + 25 * cout // 4) * oh * ow * calls
    return {"train_flops": 3 * forward * batch, "forward_flops_per_sample": forward, "params": params,
            "elementwise_train_flops_estimate": 3 * elementwise * batch,
            "layers": [(name, k, cin, cout, oh, ow, calls) for name, k, cin, cout, oh, ow, calls, _ in convs]}


class MatMul(nn.Cell):
    def construct(self, a, b):
        return ops.matmul(a, b)


class PeakAB(Callback):
    """Times training steps; every ``steps`` steps pauses and times the matmul peak."""

    def __init__(self, warmup, steps, size, matmuls):
        self.warmup, self.steps, self.size, self.matmuls = warmup, steps, size, matmuls
        rng = np.random.default_rng(0)
        self.a = Tensor(rng.standard_normal((size, size), dtype=np.float32))
        self.b = Tensor(rng.standard_normal((size, size), dtype=np.float32))
        self.mm = MatMul()
        self.count, self.step_times, self.peaks, self.loads = 0, [], [], []
        self.last = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.count += 1
        if self.count > self.warmup and self.last is not None:
            self.step_times.append(now - self.last)
        if self.count >= self.warmup and (self.count - self.warmup) % self.steps == 0:
            self.peaks.append(self.peak())
            self.loads.append(loadavg())
        self.last = time.perf_counter()

    def peak(self):
        self.mm(self.a, self.b).asnumpy()  # compiles once; warms the caches
        seconds = []
        for _ in range(self.matmuls):
            t0 = time.perf_counter()
            self.mm(self.a, self.b).asnumpy()
            seconds.append(time.perf_counter() - t0)
        return 2 * self.size ** 3 / median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_CHOICES, default="default",
                        help="default: the default experiment's model and batch size (its YAML)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the model's, see --model)")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    parser.add_argument("--size", type=int, default=2048, help="matmul size n (n x n @ n x n)")
    parser.add_argument("--matmuls", type=int, default=5, help="matmuls per peak measurement")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    kwargs, batch = model_spec(args.model)
    batch = args.batch or batch
    model = ConvLSTMModule(**kwargs)
    flops = count_flops(model.config, batch)
    if flops["params"] != count_parameters(model):
        raise SystemExit(f"mfu: the layer list has {flops['params']:,} parameters, the model "
                         f"{count_parameters(model):,}: the FLOP count does not describe this model")
    total = args.warmup + args.blocks * args.steps
    rng = np.random.default_rng(0)
    data = [(rng.random((batch, 10, 1, 64, 64), dtype=np.float32), rng.random((batch, 10, 1, 64, 64),
                                                                              dtype=np.float32)) for _ in range(4)]
    ab = PeakAB(args.warmup, args.steps, args.size, args.matmuls)
    trainer = Trainer(max_steps=total, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, callbacks=[ab], log_every_n_steps=50)
    trainer.fit(model, train_dataloaders=[data[i % 4] for i in range(total)])
    step = median(ab.step_times)
    peak = median(ab.peaks)
    achieved = flops["train_flops"] / step
    p = f"mfu_{args.model}"
    result = {f"{p}_batch": batch, f"{p}_train_gflop_per_step": flops["train_flops"] / 1e9,
              f"{p}_elementwise_gflop_per_step_estimate": flops["elementwise_train_flops_estimate"] / 1e9,
              f"{p}_step_s": step, f"{p}_achieved_gflops": achieved / 1e9,
              "mfu_peak_matmul_gflops": peak / 1e9, f"{p}_fraction_of_peak": achieved / peak,
              f"{p}_loadavg": round(median(ab.loads), 2)}
    arch = {k: model.config[k] for k in ("patch", "hidden", "kernel_sizes")}
    lines = [f"{args.model} model ({arch}) at batch {batch}: {count_parameters(model):,} params; direct-conv FLOPs "
             f"per training step {flops['train_flops'] / 1e9:.1f} G (3x forward; elementwise not counted, estimated "
             f"{flops['elementwise_train_flops_estimate'] / 1e9:.2f} G)"]
    lines += [f"  {name:6s} {k}x{k} {cin:4d}->{cout:4d} @{oh}x{ow} x{calls}/sample: "
              f"{2 * k * k * cin * cout * oh * ow * calls / 1e9:.2f} GFLOP fwd/sample"
              for name, k, cin, cout, oh, ow, calls in flops["layers"]]
    lines += [f"step {step:.3f} s -> {achieved / 1e9:.1f} GFLOP/s; peak ({args.size}^2 fp32 matmul, MindSpore graph "
              f"mode) {peak / 1e9:.1f} GFLOP/s; fraction of peak {achieved / peak:.3f} (medians over {args.blocks} "
              f"A/B blocks; load average {round(median(ab.loads), 2)})"]
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
