"""Run by tests/test_failures.py under msrun (2 CPU workers): only rank 1's data turns NaN, at global step 3.

Rank 0's own loss stays finite, so both ranks must agree to stop at the same step (or rank 1 would wait forever in the
next step's gradient all-reduce). Each rank writes ``<out>.rank<N>.txt``: its global step and stop reason.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import toy  # noqa: E402  (fixes sys.path and imports msforge before mindspore)
from callbacks import ModelCheckpoint  # noqa: E402


class RankBatches:
    """The same 4 toy batches on every rank (not sharded); on rank 1 batch 2 of epoch 0 has a NaN input."""

    def __init__(self):
        data = toy.ToyData(16)
        self.batches = [(data.x[i:i + 4], data.y[i:i + 4]) for i in range(0, 16, 4)]
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        from mindspore.communication import get_rank

        for i, (x, y) in enumerate(self.batches):
            x = x.copy()
            if get_rank() == 1 and (self.epoch, i) == (0, 2):
                x[0, 0] = float("nan")
            yield x, y


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    checkpoint = ModelCheckpoint(every_n_train_steps=1, save_last=True)
    trainer = toy.make_trainer(args.root, max_epochs=2, logger=False, strategy="data_parallel",
                               callbacks=[checkpoint])
    trainer.fit(toy.make_module(), train_dataloaders=RankBatches())
    with open(f"{args.out}.rank{trainer.global_rank}.txt", "w") as f:
        f.write(f"{trainer.global_step} {trainer.diverged} {trainer.stop_reason}\n")


if __name__ == "__main__":
    main()
