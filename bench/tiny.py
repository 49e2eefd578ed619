"""A tiny model, where the framework's per-step cost is all there is: msforge (steps_per_execution 1 and N), Lightning
``barebones`` and a raw MindSpore loop, steps/s and ratios.

The model is an MLP 32-64-1 (ReLU), MSE, Adam(1e-3), batch 64, on 64 distinct ready batches cycled (Tensors for
every side, so no side converts data per step). Each measurement is its own subprocess: it trains ``--warmup`` steps
(compiling; with N steps per execution the N-step graph compiles at its first call), then times ``--steps`` more from
batch end to batch end. The four sides alternate, round after round; each figure is the median over ``--rounds``.
Lightning runs with ``barebones=True``, ``torch.set_num_threads(2)``; msforge with no logger, checkpoint, progress
bar or model summary. Needs ``pip install -r bench/requirements.txt`` for the Lightning side.

    python bench/tiny.py [--rounds 3] [--steps 3200] [--warmup 64] [--spe 32] [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, last_json, loadavg, median  # noqa: E402

SIDES = ("msforge", "msforge_spe", "lightning", "raw")


def batches(count=64, size=64, features=32, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, 1))
    out = []
    for _ in range(count):
        x = rng.normal(size=(size, features)).astype(np.float32)
        out.append((x, np.tanh(x @ w).astype(np.float32)))
    return out


def rate(events, warmup):
    """Steps/s from (global_step, time) batch-end events, timed from the first event at or after ``warmup``."""
    start = next(e for e in events if e[0] >= warmup)
    end = events[-1]
    return (end[0] - start[0]) / (end[1] - start[1])


def mlp_module():
    """msforge's side of the tiny model as a Module: MLP 32-64-1 (ReLU), MSE, Adam(1e-3). Import msforge first."""
    from mindspore import nn, ops

    from msforge import Module

    class MLP(Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Dense(32, 64), nn.Dense(64, 1)

        def training_step(self, batch):
            x, y = batch
            err = self.fc2(ops.relu(self.fc1(x))) - y
            return (err * err).mean()

        def configure_optimizers(self):
            return nn.Adam(self.trainable_params(), learning_rate=1e-3)

    return MLP()


def child_msforge(args, spe):
    sys.path.insert(0, ROOT)
    import msforge  # noqa: F401  (caps oneDNN's ISA before mindspore loads)
    from mindspore import Tensor

    from msforge import Callback, Trainer

    events = []

    class Clock(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            events.append((trainer.global_step, time.perf_counter()))

    data = [tuple(Tensor(a) for a in b) for b in batches()]
    total = args.warmup + args.steps
    trainer = Trainer(max_steps=total, steps_per_execution=spe, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=[Clock()], log_every_n_steps=50)
    trainer.fit(mlp_module(), train_dataloaders=[data[i % len(data)] for i in range(total)])
    return rate(events, args.warmup)


def child_raw(args):
    sys.path.insert(0, ROOT)
    import msforge  # noqa: F401
    import mindspore as ms
    from mindspore import Tensor, nn

    ms.set_context(mode=ms.GRAPH_MODE)
    net = nn.SequentialCell(nn.Dense(32, 64), nn.ReLU(), nn.Dense(64, 1))
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 1e-3))
    data = [tuple(Tensor(a) for a in b) for b in batches()]
    for i in range(args.warmup):
        loss = step(*data[i % len(data)])
    loss.asnumpy()
    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(*data[i % len(data)])
    loss.asnumpy()
    return args.steps / (time.perf_counter() - start)


def child_lightning(args):
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    import lightning.pytorch as pl

    class MLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            err = self.net(x) - y
            return torch.mean(err * err)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    events = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            events.append((trainer.global_step, time.perf_counter()))

    data = [tuple(torch.from_numpy(a) for a in b) for b in batches()]
    total = args.warmup + args.steps

    class Ready(torch.utils.data.Dataset):
        def __len__(self):
            return total

        def __getitem__(self, i):
            return data[i % len(data)]

    loader = torch.utils.data.DataLoader(Ready(), batch_size=None, shuffle=False, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=total, max_epochs=1, barebones=True, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Clock()])
    trainer.fit(MLP(), loader)
    return rate(events, args.warmup)


def measure(side, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", side, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--spe", str(args.spe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    try:
        return last_json(proc.stdout)["steps_per_s"]
    except (ValueError, KeyError):
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        raise RuntimeError(f"{side}: exit {proc.returncode}: {lines[-1] if lines else 'no output'}") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3200, help="timed steps per measurement (a multiple of --spe)")
    parser.add_argument("--warmup", type=int, default=64, help="steps before timing (> --spe)")
    parser.add_argument("--spe", type=int, default=32, help="msforge_spe's steps_per_execution")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "lightning":
            value = child_lightning(args)
        elif args.child == "raw":
            value = child_raw(args)
        else:
            value = child_msforge(args, args.spe if args.child == "msforge_spe" else 1)
        print(json.dumps({"steps_per_s": value}))
        return
    if args.warmup <= args.spe:
        parser.error(f"--warmup {args.warmup} must exceed --spe {args.spe} (the N-step graph compiles in warm-up)")
    try:
        import lightning  # noqa: F401
    except ImportError:
        sys.exit("bench/tiny.py needs torch and lightning: pip install -r bench/requirements.txt")
    load_start = loadavg()
    rates = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            rates[side].append(measure(side, args))
    m = {side: median(values) for side, values in rates.items()}
    result = {
        "tiny_msforge_steps_per_s": round(m["msforge"], 1),
        "tiny_msforge_spe_steps_per_s": round(m["msforge_spe"], 1),
        "tiny_lightning_barebones_steps_per_s": round(m["lightning"], 1),
        "tiny_raw_loop_steps_per_s": round(m["raw"], 1),
        "tiny_ratio_msforge_over_lightning": round(m["msforge"] / m["lightning"], 3),
        "tiny_spe_ratio_msforge_over_lightning": round(m["msforge_spe"] / m["lightning"], 3),
        "tiny_spe_ratio_msforge_over_raw": round(m["msforge_spe"] / m["raw"], 3),
        "tiny_steps_per_execution": args.spe, "tiny_rounds": args.rounds,
        "load_average_start": load_start, "load_average_end": loadavg(),
    }
    lines = [f"{side:12s} " + " ".join(f"{v:8.1f}" for v in rates[side]) + f"   median {m[side]:8.1f} steps/s"
             for side in SIDES]
    lines.append(f"msforge/lightning {result['tiny_ratio_msforge_over_lightning']:.2f}, msforge "
                 f"steps_per_execution={args.spe}/lightning {result['tiny_spe_ratio_msforge_over_lightning']:.2f}, "
                 f"/raw loop {result['tiny_spe_ratio_msforge_over_raw']:.2f}")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
