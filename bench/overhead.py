"""Trainer vs a hand-written MindSpore graph-mode loop (TrainOneStepCell) on the same model and the same batches.

The raw loop runs inside the Trainer's own process, from a callback beside every epoch (after it on even epochs,
before it on odd ones: whichever runs first in a pair is slower here), so the two alternate epoch by epoch (A/B) on
the same machine state. Each side's first epoch includes compilation and is dropped. Prints per-step
medians, their ratio Trainer/raw (target: <= 1.03) and the median of the epochs' paired ratios. Many short epochs
rather than a few long ones: on this machine the speed moves by 10-30% from one minute to the next, and only the
median of many pairs sees through that.

    python bench/overhead.py [--epochs 12] [--batches 20] [--json]
"""
import argparse
import json
import statistics
import time

import msforge  # noqa: F401  (before mindspore: caps oneDNN's ISA)
import numpy as np
from mindspore import Tensor, nn

from msforge import Callback, Module, Trainer


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.body = nn.SequentialCell(
            nn.Conv2d(4, 32, 3, pad_mode="same"), nn.ReLU(), nn.Conv2d(32, 32, 3, pad_mode="same"), nn.ReLU(),
            nn.Conv2d(32, 4, 3, pad_mode="same"))

    def construct(self, x):
        return self.body(x)


class Model(Module):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def training_step(self, batch):
        x, y = batch
        return ((self.net(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return nn.Adam(self.trainable_params(), learning_rate=1e-3)


class RawLoopAB(Callback):
    """Times the Trainer's epochs, and beside each one runs the raw loop over the same batches: after the epoch on even
    epochs, before it on odd ones. Whichever side runs first in a pair ran 3-7% slower in a step-only A/B on this
    machine (the same order bias both ways), so the order alternates."""

    def __init__(self, batches):
        self.batches = [tuple(Tensor(a) for a in b) for b in batches]
        net = Net()
        loss = nn.WithLossCell(net, nn.MSELoss())
        self.raw_step = nn.TrainOneStepCell(loss, nn.Adam(net.trainable_params(), learning_rate=1e-3))
        self.trainer_times, self.raw_times = [], []

    def run_raw(self):
        t0 = time.perf_counter()
        for x, y in self.batches:
            loss = self.raw_step(x, y)
        loss.asnumpy()  # waited for, as the Trainer's epoch end reads its steps' outputs
        self.raw_times.append((time.perf_counter() - t0) / len(self.batches))

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch % 2:
            self.run_raw()
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.trainer_times.append((time.perf_counter() - self.t0) / len(self.batches))
        if trainer.current_epoch % 2 == 0:
            self.run_raw()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(16, 4, 32, 32)).astype(np.float32), rng.normal(size=(16, 4, 32, 32)).astype(np.float32))
               for _ in range(args.batches)]
    ab = RawLoopAB(batches)
    trainer = Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, callbacks=[ab], log_every_n_steps=50)
    trainer.fit(Model(), train_dataloaders=batches)
    trainer_step = statistics.median(ab.trainer_times[1:])
    raw_step = statistics.median(ab.raw_times[1:])
    paired = statistics.median(t / r for t, r in zip(ab.trainer_times[1:], ab.raw_times[1:]))
    result = {"overhead_trainer_step_s": trainer_step, "overhead_raw_step_s": raw_step,
              "overhead_ratio_trainer_over_raw": trainer_step / raw_step, "overhead_ratio_paired_median": paired}
    if not args.json:
        print(f"Trainer {trainer_step * 1e3:.2f} ms/step, raw TrainOneStepCell loop {raw_step * 1e3:.2f} ms/step "
              f"(medians over {args.epochs - 1} alternating epochs of {args.batches} steps)")
        print(f"ratio Trainer/raw = {trainer_step / raw_step:.3f} (target <= 1.03; paired per-epoch median "
              f"{paired:.3f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
