"""Run by tests/test_failures.py: the toy job of tests/toy.py, whose disk "fills up" while it trains.

After the checkpoints of step 2 are written, the process's file-size limit (``RLIMIT_FSIZE``) is set just above the
size of one checkpoint, with room for about one and a half more entries of ModelCheckpoint's growing top-k list
(``save_top_k=-1`` with a monitor: every file names all the kept ones, so each checkpoint is a little larger than the
one before). The checkpoints of step 3 still fit; the first one of step 4 does not. SIGXFSZ is ignored, so the write
fails with EFBIG (as a full disk fails with ENOSPC) instead of killing the process.

    python tests/fail_disk_full.py ROOT --fill          # stops with the error at step 4
    python tests/fail_disk_full.py ROOT --ckpt PATH --out final.npz   # no limit: resume and finish
"""
import argparse
import os
import resource
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import toy  # noqa: E402  (fixes sys.path and imports msforge before mindspore)
from callbacks import ModelCheckpoint  # noqa: E402
from msforge import Callback  # noqa: E402


class DiskFills(Callback):
    order = 200  # after ModelCheckpoint (100) has saved this step's files

    def __init__(self, checkpoint):
        self.checkpoint, self.sizes = checkpoint, {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.sizes[trainer.global_step] = os.path.getsize(self.checkpoint.last_model_path)
        if trainer.global_step == 2:
            growth = self.sizes[2] - self.sizes[1]
            limit = self.sizes[2] + int(1.5 * growth)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            print(f"LIMIT {limit} (checkpoint {self.sizes[2]} bytes, +{growth} per step)", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--fill", action="store_true", help="set the file-size limit after step 2")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    checkpoint = ModelCheckpoint(monitor="train_loss", save_top_k=-1, every_n_train_steps=1, save_last=True)
    callbacks = [checkpoint, toy.KillSelf("", -1)]  # only its RESUMED/STEP lines here
    if args.fill:
        callbacks.append(DiskFills(checkpoint))
    train, val = toy.loaders()
    # the job of toy.main (3 epochs, StepLR, sanity check) without loggers: only checkpoints are written
    trainer = toy.make_trainer(args.root, max_epochs=3, num_sanity_val_steps=2, logger=False, callbacks=callbacks)
    trainer.fit(toy.make_module(scheduler="step"), train_dataloaders=train, val_dataloaders=val, ckpt_path=args.ckpt)
    if args.out:
        import numpy as np

        np.savez(args.out, **toy.params_of(trainer))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
