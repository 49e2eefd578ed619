"""msforge vs PyTorch Lightning on this CPU: the same ConvLSTM, batches, weights and thread count; steps/s and ratio.

The two frameworks run in two long-lived subprocesses (they do not share a process well: two thread pools, two
oneDNN builds). Each compiles / warms up, then the parent alternates them A/B/B/A...: it tells one to time ``--steps``
training steps (each step timed from batch end to batch end, data and hooks included), waits for its JSON, then the
other. The idle one is blocked on its stdin inside a batch-end hook, so it uses no CPU. Before that a third
subprocess (MindSpore, PyNative) generates the Moving MNIST batches and the msforge model's initial weights, and a
fourth (torch) loads those weights into the PyTorch twin defined here and checks that its forward output matches
msforge's (parameter counts are compared too). Both sides then train from the same weights on the same batches.

Models (``--archs``): ``models/convlstm.py``'s ``ConvLSTMModule``: ``default`` (the default experiment's model and
batch size, from experiments/convlstm_mnist.yaml), ``cpu_small`` (patch 4, 2+2 ConvLSTM(64) 5x5, batch 8, issue 5's
first row) and ``seed`` (the ModelZoo encoder-forecaster, batch 2).
Both sides in their fastest honest settings: msforge graph mode, no logger / checkpoint / progress bar; Lightning
``barebones=True`` (no logger, checkpointing, progress bar, model summary), ``torch.set_num_threads(2)``, eager
float32, plain Adam. ``--precision bf16-mixed`` gives both Trainers that precision (Lightning: ``torch.autocast``
to bfloat16 on the CPU; msforge: its convolutions multiply in bfloat16). Needs ``pip install -r
bench/requirements.txt`` (exits with a message when torch is missing).

    python bench/vs_lightning.py [--archs default,cpu_small,seed] [--rounds 4] [--steps 5] [--warmup 2]
                                 [--precision 32|bf16-mixed] [--json]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_CHOICES, child_env, emit, loadavg, median, model_spec, read_json_line, send  # noqa: E402

N_DATA_BATCHES = 4  # distinct batches, cycled
TWIN_TOLERANCE = 1e-3  # max |msforge - torch| of the forward output on the same weights and input


# == the PyTorch twin of models/convlstm.py (imports torch lazily: the parent and the MindSpore children never do) ==
def group_count(channels, per_group=32):
    """As models.convlstm.group_count: channels // 32 (at least 1), lowered until it divides channels."""
    groups = max(1, channels // per_group)
    while channels % groups:
        groups -= 1
    return groups


def torch_twin(config):
    """``EncoderForecaster(**config)`` in PyTorch: same layers, kernel sizes, padding, GroupNorm, LeakyReLU(0.2),
    space-to-depth patching, gate order (i, f, g, o) and parameter names (GroupNorm gamma/beta are weight/bias)."""
    import torch
    from torch import nn

    def space_to_depth(x, p):
        if p == 1:
            return x
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, c * p * p, h // p, w // p)

    def depth_to_space(x, p):
        if p == 1:
            return x
        n, cpp, h, w = x.shape
        c = cpp // (p * p)
        x = x.reshape(n, c, p, p, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c, h * p, w * p)

    def conv(cin, cout, k, stride=1):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=True)

    class ConvLSTMCell(nn.Module):
        def __init__(self, in_channels, hidden, kernel_size=5, norm=True):
            super().__init__()
            self.hidden = hidden
            self.conv = conv(in_channels + hidden, 4 * hidden, kernel_size)
            self.norm = nn.GroupNorm(group_count(4 * hidden), 4 * hidden) if norm else None

        def zero_state(self, batch, height, width, like):
            zeros = like.new_zeros((batch, self.hidden, height, width))
            return (zeros, zeros)

        def forward(self, x, h, c):
            gates = self.conv(torch.cat((x, h), 1))
            if self.norm is not None:
                gates = self.norm(gates)
            i, f, g, o = torch.chunk(gates, 4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return (h, c)

    class EncoderForecaster(nn.Module):
        def __init__(self, in_channels=1, patch=1, hidden=(64, 96, 96), kernel_sizes=5, downsample=None,
                     stem_channels=None, head_channels=None, forecaster_input_channels=None, norm=True, n_target=10,
                     feed_predictions=False, output_activation="none", negative_slope=0.2):
            super().__init__()
            if feed_predictions:
                raise NotImplementedError("the twin implements feed_predictions=False only")
            hidden = tuple(int(h) for h in hidden)
            levels = len(hidden)
            kernel_sizes = (kernel_sizes,) * levels if isinstance(kernel_sizes, int) else tuple(kernel_sizes)
            downsample = (False,) * levels if downsample is None else tuple(bool(d) for d in downsample)
            self.patch, self.n_target, self.levels, self.hidden = int(patch), int(n_target), levels, hidden
            self.frame_channels = in_channels * self.patch ** 2
            self.top_factor = 2 ** sum(downsample)
            if forecaster_input_channels is None:
                forecaster_input_channels = self.frame_channels * self.top_factor ** 2
            self.fc_in_channels = int(forecaster_input_channels)
            self.output_activation = output_activation
            self.act = nn.LeakyReLU(negative_slope)
            channels = self.frame_channels
            self.stem = None
            if stem_channels:
                self.stem = conv(channels, stem_channels, 3)
                channels = stem_channels
            enc, fc, down, up, down_index, up_index = [], [], [], [], [], []
            for level in range(levels):
                if downsample[level]:
                    down_index.append(len(down))
                    down.append(conv(channels, channels, 3, stride=2))
                else:
                    down_index.append(-1)
                enc.append(ConvLSTMCell(channels, hidden[level], kernel_sizes[level], norm=norm))
                fc_in = self.fc_in_channels if level == levels - 1 else hidden[level + 1]
                fc.append(ConvLSTMCell(fc_in, hidden[level], kernel_sizes[level], norm=norm))
                if downsample[level]:
                    up_index.append(len(up))
                    up.append(nn.ConvTranspose2d(hidden[level], hidden[level], 4, stride=2, padding=1, bias=True))
                else:
                    up_index.append(-1)
                channels = hidden[level]
            self.enc_cells, self.fc_cells = nn.ModuleList(enc), nn.ModuleList(fc)
            self.down, self.up = nn.ModuleList(down), nn.ModuleList(up)
            self.down_index, self.up_index = down_index, up_index
            self.head = conv(hidden[0], head_channels, 3) if head_channels else None
            self.out = conv(head_channels or hidden[0], self.frame_channels, 1)

        def _unroll(self, cell, seq, state):
            outputs = []
            for t in range(seq.shape[1]):
                state = cell(seq[:, t], *state)
                outputs.append(state[0])
            return torch.stack(outputs, 1), state

        def forward(self, x):
            b, t, c, height, width = x.shape
            frames = space_to_depth(x.reshape(b * t, c, height, width), self.patch)
            if self.stem is not None:
                frames = self.act(self.stem(frames))
            states = []
            for level in range(self.levels):
                if self.down_index[level] >= 0:
                    frames = self.act(self.down[self.down_index[level]](frames))
                _, ch, h, w = frames.shape
                cell = self.enc_cells[level]
                outputs, state = self._unroll(cell, frames.reshape(b, t, ch, h, w), cell.zero_state(b, h, w, x))
                states.append(state)
                frames = outputs.reshape(b * t, self.hidden[level], h, w)
            n = self.n_target
            h_top = height // self.patch // self.top_factor
            w_top = width // self.patch // self.top_factor
            seq = x.new_zeros((b, n, self.fc_in_channels, h_top, w_top))
            for level in range(self.levels - 1, -1, -1):
                outputs, _ = self._unroll(self.fc_cells[level], seq, states[level])
                _, _, ch, h, w = outputs.shape
                frames = outputs.reshape(b * n, ch, h, w)
                if self.up_index[level] >= 0:
                    frames = self.act(self.up[self.up_index[level]](frames))
                _, ch, h, w = frames.shape
                seq = frames.reshape(b, n, ch, h, w)
            _, _, ch, h, w = seq.shape
            frames = seq.reshape(b * n, ch, h, w)
            if self.head is not None:
                frames = self.act(self.head(frames))
            frames = self.out(frames)
            if self.output_activation == "sigmoid":
                frames = torch.sigmoid(frames)
            elif self.output_activation == "leaky_relu":
                frames = self.act(frames)
            return depth_to_space(frames, self.patch).reshape(b, n, c, height, width)

    return EncoderForecaster(**config)


def torch_state_from_msforge(weights):
    """msforge parameter names/arrays -> a torch state dict of the twin wrapped as ``.net``."""
    import torch

    state = {}
    for name, value in weights.items():
        name = name.replace(".norm.gamma", ".norm.weight").replace(".norm.beta", ".norm.bias")
        state[name] = torch.from_numpy(value.copy())
    return state


# == the block protocol, the same on both sides ======================================================================
class Gate:
    """Called at every batch end. After ``warmup`` steps it reports READY and blocks on stdin for ``RUN n`` (time the
    next n steps, report them, block again) or ``QUIT`` (returns True: stop training)."""

    def __init__(self, warmup, info):
        self.warmup, self.info = warmup, info
        self.count, self.block, self.times, self.warmup_times = 0, None, [], []
        self.last = time.perf_counter()

    def tick(self):
        now = time.perf_counter()
        self.count += 1
        if self.block is None:
            self.warmup_times.append(now - self.last)
            self.last = now
            if self.count < self.warmup:
                return False
            send({"ready": True, "warmup_times": self.warmup_times, **self.info})
        else:
            self.times.append(now - self.last)
            self.last = now
            if len(self.times) < self.block:
                return False
            send({"times": self.times, "loadavg": loadavg()})
        command = sys.stdin.readline().split()
        if not command or command[0] == "QUIT":
            return True
        self.block, self.times = int(command[1]), []
        self.last = time.perf_counter()
        return False


# == subprocesses ===================================================================================================
def child_prepare(args):
    """MindSpore, PyNative: Moving MNIST batches, the msforge model's initial weights, its output on batch 0[:1]."""
    import msforge  # noqa: F401  (before mindspore)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from datamodules.moving_mnist import MovingMNISTDataModule
    from models.convlstm import ConvLSTMModule, count_parameters

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    dm = MovingMNISTDataModule(num_digits=2, samples_per_epoch=args.batch * N_DATA_BATCHES, batch_size=args.batch,
                               val_size=0, test_size=1, seed=0)
    dm.setup("fit")
    batches = [b for _, b in zip(range(N_DATA_BATCHES), dm.train_dataloader())]
    model = ConvLSTMModule(**model_spec(args.arch)[0])
    x = batches[0][0][:1]
    out = model(Tensor(x)).asnumpy()
    arrays = {f"x{i}": b[0] for i, b in enumerate(batches)}
    arrays.update({f"y{i}": b[1] for i, b in enumerate(batches)})
    arrays.update({f"w:{p.name}": p.asnumpy() for p in model.trainable_params()})
    arrays["check_input"], arrays["check_output"] = x, out
    arrays["config"] = np.array(json.dumps(model.config))
    arrays["lr"] = np.array(float(model.hparams.lr))
    np.savez(args.data, **arrays)
    send({"params": count_parameters(model), "config": model.config})


def _load(path):
    import numpy as np

    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    n = sum(1 for k in data if k.startswith("x"))
    batches = [(data[f"x{i}"], data[f"y{i}"]) for i in range(n)]
    weights = {k[2:]: v for k, v in data.items() if k.startswith("w:")}
    return data, batches, weights, json.loads(str(data["config"]))


def child_check(args):
    """torch: the twin's parameter count, and its forward output vs msforge's on the same weights and input."""
    import torch

    torch.set_num_threads(args.threads)
    data, _, weights, config = _load(args.data)
    net = torch.nn.Module()
    net.net = torch_twin(config)
    missing = net.load_state_dict(torch_state_from_msforge(weights), strict=True)
    with torch.no_grad():
        out = net.net(torch.from_numpy(data["check_input"])).numpy()
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    send({"params": int(params), "max_abs_diff": float(abs(out - data["check_output"]).max()),
          "load": str(missing)})


def child_msforge(args):
    import msforge  # noqa: F401  (before mindspore: caps oneDNN's ISA)
    import mindspore as ms
    from mindspore import Parameter, Tensor

    from models.convlstm import ConvLSTMModule, count_parameters
    from msforge import Callback, Trainer

    _, batches, weights, _ = _load(args.data)
    model = ConvLSTMModule(**model_spec(args.arch)[0])
    not_loaded = ms.load_param_into_net(model, {k: Parameter(Tensor(v), name=k) for k, v in weights.items()})
    if not_loaded and any(not_loaded):
        raise RuntimeError(f"weights not loaded: {not_loaded}")
    gate = Gate(args.warmup, {"framework": "msforge", "params": count_parameters(model),
                              "mindspore": ms.__version__, "isa": os.environ.get("ONEDNN_MAX_CPU_ISA")})

    class GateCallback(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if gate.tick():
                trainer.should_stop = True

    total = args.total_steps
    data = [batches[i % len(batches)] for i in range(total)]
    trainer = Trainer(max_steps=total, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, callbacks=[GateCallback()], log_every_n_steps=50,
                      precision=args.precision)
    trainer.fit(model, train_dataloaders=data)


def child_lightning(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import lightning.pytorch as pl

    data, batches, weights, config = _load(args.data)
    lr = float(data["lr"])
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

    class Twin(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch_twin(config)

        def training_step(self, batch, batch_idx):
            x, y = batch
            err = self.net(x) - y
            return torch.mean(err * err)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    model = Twin()
    model.load_state_dict(torch_state_from_msforge(weights), strict=True)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gate = Gate(args.warmup, {"framework": "lightning", "params": int(params), "torch": torch.__version__,
                              "lightning": pl.__version__, "threads": torch.get_num_threads()})

    class GateCallback(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if gate.tick():
                trainer.should_stop = True

    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return args.total_steps

        def __getitem__(self, i):
            return batches[i % len(batches)]

    loader = torch.utils.data.DataLoader(Batches(), batch_size=None, shuffle=False, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=args.total_steps, max_epochs=1, barebones=True,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[GateCallback()], precision=args.precision)
    trainer.fit(model, loader)


CHILDREN = {"prepare": child_prepare, "check": child_check, "msforge": child_msforge, "lightning": child_lightning}


# == parent =========================================================================================================
def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("lightning") is not None


class Child:
    def __init__(self, role, args, arch, batch, data, workdir, total_steps=0):
        self.role = role
        self.log_path = os.path.join(workdir, f"{arch}_{role}.log")
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", role, "--arch", arch, "--batch", str(batch),
               "--data", data, "--warmup", str(args.warmup), "--total-steps", str(total_steps),
               "--threads", str(args.threads), "--precision", args.precision]
        env = child_env()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     cwd=workdir, env=env, bufsize=1)

    def read(self):
        try:
            return read_json_line(self.proc.stdout, self.proc, f"the {self.role} subprocess (log {self.log_path})")
        except RuntimeError:
            self.log.flush()
            with open(self.log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"the {self.role} subprocess failed; end of its log:\n{tail}") from None

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.command("QUIT")
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def run_once(role, args, arch, batch, data, workdir):
    child = Child(role, args, arch, batch, data, workdir)
    try:
        result = child.read()
        child.proc.wait(timeout=120)
        return result
    finally:
        child.close()


def bench_arch(args, arch, batch, workdir):
    data = os.path.join(workdir, f"{arch}.npz")
    t0 = time.perf_counter()
    prepared = run_once("prepare", args, arch, batch, data, workdir)
    check = run_once("check", args, arch, batch, data, workdir)
    total = args.warmup + args.rounds * args.steps + 1
    sides = {}
    try:
        for role in ("msforge", "lightning"):  # one at a time: their warm-ups (compilation) do not overlap
            sides[role] = Child(role, args, arch, batch, data, workdir, total)
            sides[role].ready = sides[role].read()
        times = {"msforge": [], "lightning": []}
        rounds = []
        for r in range(args.rounds):
            order = ("msforge", "lightning") if r % 2 == 0 else ("lightning", "msforge")  # A/B, B/A, ...
            block = {}
            for role in order:
                time.sleep(args.pause)  # let the other process's spinning threads go to sleep
                sides[role].command(f"RUN {args.steps}")
                block[role] = sides[role].read()
                times[role] += block[role]["times"]
            rounds.append({"msforge_step_s": median(block["msforge"]["times"]),
                           "lightning_step_s": median(block["lightning"]["times"]),
                           "loadavg": block[order[-1]]["loadavg"]})
    finally:
        for child in sides.values():
            child.close()
    ms_step, pl_step = median(times["msforge"]), median(times["lightning"])
    paired = median([r["lightning_step_s"] / r["msforge_step_s"] for r in rounds])
    ms_params, pl_params = sides["msforge"].ready["params"], sides["lightning"].ready["params"]
    return {
        f"{arch}_batch": batch,
        f"{arch}_params_msforge": ms_params,
        f"{arch}_params_torch": pl_params,
        f"{arch}_params_equal": ms_params == pl_params == prepared["params"] == check["params"],
        f"{arch}_twin_max_abs_diff": check["max_abs_diff"],
        f"{arch}_twin_ok": check["max_abs_diff"] <= TWIN_TOLERANCE,
        f"{arch}_msforge_step_s": ms_step,
        f"{arch}_lightning_step_s": pl_step,
        f"{arch}_msforge_steps_per_s": 1.0 / ms_step,
        f"{arch}_lightning_steps_per_s": 1.0 / pl_step,
        f"{arch}_ratio_msforge_over_lightning": pl_step / ms_step,
        f"{arch}_ratio_paired_median": paired,
        f"{arch}_msforge_first_step_s": sides["msforge"].ready["warmup_times"][0],
        f"{arch}_lightning_first_step_s": sides["lightning"].ready["warmup_times"][0],
        f"{arch}_rounds": rounds,
        f"{arch}_loadavg": round(median([r["loadavg"] for r in rounds]), 2),
        f"{arch}_wall_s": time.perf_counter() - t0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="default,cpu_small,seed",
                        help=f"comma-separated, of {', '.join(MODEL_CHOICES)}")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size (default: the default experiment's for default, 8 for cpu_small, 2 for seed)")
    parser.add_argument("--rounds", type=int, default=4, help="A/B rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between blocks")
    parser.add_argument("--precision", default="32", choices=("32", "bf16-mixed"),
                        help="both Trainers' precision (bf16-mixed: Lightning autocasts to bfloat16 on the CPU; "
                        "msforge's convolutions multiply in bfloat16)")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--total-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child](args)
        return
    if not torch_available():
        print("vs_lightning: torch and lightning are not installed; run `pip install -r bench/requirements.txt` "
              "(torch==2.13.0, lightning) and try again", file=sys.stderr)
        emit({"vs_lightning_skipped": "torch or lightning not installed"}, True)
        sys.exit(3)
    result, lines = {"vs_lightning_loadavg_start": loadavg(), "vs_lightning_precision": args.precision}, []
    workdir = tempfile.mkdtemp(prefix="bench_vs_lightning_")  # kept (with the subprocess logs) if a run fails
    try:
        for arch in [a for a in args.archs.split(",") if a]:
            if arch not in MODEL_CHOICES:
                parser.error(f"--archs: {arch!r} is not one of {', '.join(MODEL_CHOICES)}")
            batch = args.batch or model_spec(arch)[1]
            r = bench_arch(args, arch, batch, workdir)
            prefix = "" if args.precision == "32" else "bf16_"  # keys of both precisions can share one JSON
            result.update({prefix + key: value for key, value in r.items()})
            lines += [
                f"{arch} (batch {batch}, precision {args.precision}): parameters msforge {r[f'{arch}_params_msforge']:,} / torch twin "
                f"{r[f'{arch}_params_torch']:,} ({'equal' if r[f'{arch}_params_equal'] else 'DIFFERENT'}); twin "
                f"forward max |diff| {r[f'{arch}_twin_max_abs_diff']:.2e} "
                f"({'ok' if r[f'{arch}_twin_ok'] else 'NOT the same network'})",
                f"  msforge   {r[f'{arch}_msforge_step_s']:.3f} s/step = {r[f'{arch}_msforge_steps_per_s']:.3f} "
                f"steps/s (first step, compile included: {r[f'{arch}_msforge_first_step_s']:.1f} s)",
                f"  Lightning {r[f'{arch}_lightning_step_s']:.3f} s/step = {r[f'{arch}_lightning_steps_per_s']:.3f} "
                f"steps/s (first step {r[f'{arch}_lightning_first_step_s']:.1f} s)",
                f"  ratio msforge/Lightning (steps/s) = {r[f'{arch}_ratio_msforge_over_lightning']:.3f} "
                f"(paired per-round median {r[f'{arch}_ratio_paired_median']:.3f}; target >= 1.0, aim 1.3); "
                f"medians over {args.rounds} A/B rounds of {args.steps} steps; load average "
                f"{r[f'{arch}_loadavg']}",
            ]
    except BaseException:
        print(f"vs_lightning: failed; subprocess logs in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
