"""Moving MNIST generation rate vs the training step's consumption rate, and the share of step time spent on data.

The default experiment (``experiments/convlstm_mnist.yaml``): its model and data module (``MovingMNISTDataModule``, its
batch size and loader settings) are built from the YAML, and the Trainer trains on it for ``--blocks`` blocks of
``--steps`` steps after ``--warmup`` steps (the first compiles). Measured in the same run, alternating (A/B):

* A, between blocks (training paused in a batch-end hook): the generation rate, ``--gen-batches`` batches generated
  and collated in the main thread exactly as the loader's producer thread does, in videos/s.
* B, every training step: its cycle time (batch end to batch end), and in it the time the Trainer's loop waits on
  data: (1) inside the DataLoader's ``next()`` (the loader is wrapped to time it), (2) the whole gap from one batch's
  end hook to the next one's start hook (``next()`` + numpy -> Tensor + hooks). The ``prefetch + 1`` batches after
  each pause are left out of the steady-state shares: the loader's queue filled up during the pause.

Consumption rate = batch size / median cycle time. Target: data wait < 2% of the step time.

    python bench/data.py [--config experiments/convlstm_mnist.yaml] [--blocks 3] [--steps 6] [--warmup 2] [--json]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msforge  # noqa: F401,E402  (before mindspore: caps oneDNN's ISA)
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from _common import ROOT, emit, loadavg, median  # noqa: E402
from msforge import Callback, Trainer  # noqa: E402
from msforge.data import DataLoader, collate  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "experiments", "convlstm_mnist.yaml")


def import_class(path):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def build_from_yaml(path, samples):
    """The config's model and data module (data module resized to ``samples`` training videos, no validation)."""
    with open(path) as f:
        config = yaml.safe_load(f)
    model = import_class(config["model"]["class_path"])(**config["model"].get("init_args", {}))
    data_args = dict(config["data"].get("init_args", {}))
    data_args.update(samples_per_epoch=samples, val_size=0)
    data_class = import_class(config["data"]["class_path"])

    class TimedDataModule(data_class):
        def train_dataloader(self):
            loader = super().train_dataloader()
            if not isinstance(loader, DataLoader):
                raise TypeError(f"bench/data.py times msforge DataLoaders; got {type(loader).__name__}")
            loader.__class__ = TimedLoader  # still an msforge DataLoader for the Trainer (resume, epochs)
            loader.next_seconds = []
            return loader

    return config, model, TimedDataModule(**data_args)


class TimedLoader(DataLoader):
    """The msforge DataLoader, recording the seconds each ``next()`` takes (the consumer's wait)."""

    def __iter__(self):
        source = super().__iter__()
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(source)
            except StopIteration:
                return
            self.next_seconds.append(time.perf_counter() - t0)
            yield batch


class Probe(Callback):
    def __init__(self, datamodule, warmup, steps, gen_batches):
        self.dm, self.warmup, self.steps, self.gen_batches = datamodule, warmup, steps, gen_batches
        self.starts, self.ends, self.after_pause = [], [], []
        self.gen_rates, self.loads = [], []
        self.pending_pause = False

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.starts.append(time.perf_counter())
        self.after_pause.append(self.pending_pause)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        done = len(self.starts)
        if done >= self.warmup and (done - self.warmup) % self.steps == 0:
            self.gen_rates.append(self.generation_rate(trainer))
            self.loads.append(loadavg())
            self.pending_pause = True
        else:
            self.pending_pause = False
        self.ends.append(time.perf_counter())  # after the pause: the next gap does not include it

    def generation_rate(self, trainer):
        """Videos/s generating and collating ``gen_batches`` batches as the loader's producer does (main thread)."""
        dataset, bs = self.dm.train_set, self.dm.batch_size
        base = len(dataset) // 2 + len(self.gen_rates) * self.gen_batches * bs  # not the videos being trained on
        t0 = time.perf_counter()
        for b in range(self.gen_batches):
            collate([dataset[(base + b * bs + i) % len(dataset)] for i in range(bs)])
        return self.gen_batches * bs / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks (generation measured before each)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    parser.add_argument("--gen-batches", type=int, default=8, help="batches generated per generation measurement")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    total = args.warmup + args.blocks * args.steps
    config, model, dm = build_from_yaml(args.config, samples=10**6)
    probe = Probe(dm, args.warmup, args.steps, args.gen_batches)
    trainer = Trainer(max_steps=total, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, limit_val_batches=0, callbacks=[probe], log_every_n_steps=50)
    trainer.fit(model, datamodule=dm)
    loader = trainer.train_dataloader
    n = len(probe.ends)
    cycles = np.diff(probe.ends)  # cycle i+1: end of batch i -> end of batch i+1
    gaps = np.array(probe.starts[1:n]) - np.array(probe.ends[: n - 1])
    waits = np.array(loader.next_seconds[1:n])
    timed = np.arange(1, n) >= args.warmup  # batches after warm-up
    after_pause = np.array(probe.after_pause[1:n])
    refilled = np.zeros_like(after_pause)  # the prefetch + 1 batches after each pause
    for k in range(loader.prefetch + 1):
        refilled[k:] |= after_pause[: len(after_pause) - k]
    steady = timed & ~refilled
    fallback = not steady.any()  # too few steps per block: use every timed batch
    if fallback:
        steady = timed
    bs = dm.batch_size
    cycle = float(np.median(cycles[timed]))
    gen = median(probe.gen_rates)
    consume = bs / cycle
    result = {
        "data_batch_size": bs,
        "data_num_workers": dm.num_workers,
        "data_prefetch": loader.prefetch,
        "data_gen_videos_per_s": gen,
        "data_consume_videos_per_s": consume,
        "data_ratio_gen_over_consume": gen / consume,
        "data_step_s": cycle,
        "data_wait_next_share": float(waits[steady].sum() / cycles[steady].sum()),
        "data_wait_gap_share": float(gaps[steady].sum() / cycles[steady].sum()),
        "data_wait_next_share_all": float(waits[timed].sum() / cycles[timed].sum()),
        "data_wait_gap_share_all": float(gaps[timed].sum() / cycles[timed].sum()),
        "data_wait_next_median_ms": float(np.median(waits[steady]) * 1e3),
        "data_steady_batches": 0 if fallback else int(steady.sum()),
        "data_loadavg": round(median(probe.loads), 2),
    }
    over = ("all timed batches (blocks too short to leave out refills)" if fallback
            else f"{int(steady.sum())} steady batches")
    lines = [
        f"{config['model']['class_path']} at batch {bs} ({args.config}); loader: num_workers={dm.num_workers}, "
        f"prefetch={loader.prefetch}; load average {result['data_loadavg']}",
        f"generation {gen:.1f} videos/s (main thread), consumption {consume:.2f} videos/s "
        f"({cycle:.3f} s/step): generation/consumption = {gen / consume:.1f}x",
        f"data wait: {100 * result['data_wait_next_share']:.3f}% of step time inside DataLoader next() "
        f"(median {result['data_wait_next_median_ms']:.2f} ms), {100 * result['data_wait_gap_share']:.3f}% "
        f"batch end -> next batch start (next() + to-Tensor + hooks), over {over}; "
        f"all timed batches: {100 * result['data_wait_next_share_all']:.3f}% / "
        f"{100 * result['data_wait_gap_share_all']:.3f}% (target < 2%)",
    ]
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
