"""A tiny regression Module and a deterministic dataset for the callback tests (real MindSpore, CPU, graph mode).

Also runnable as a script (``python tests/toy.py ROOT --help``): the training job the resume tests start, kill and
resume in subprocesses.
"""
import os
import sys

# this checkout's packages first (an editable install made while callbacks/ was empty maps it as a namespace package)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import msforge  # noqa: E402,F401  (before mindspore: caps oneDNN's ISA)

import argparse  # noqa: E402
import signal  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import nn, ops  # noqa: E402

from msforge import Callback, DataLoader, Module, Trainer  # noqa: E402
from msforge.schedulers import ReduceLROnPlateau, StepLR  # noqa: E402


class ToyData:
    """``n`` samples of y = tanh(x @ w) + small noise, the same for every seed-free construction."""

    def __init__(self, n=32, features=4, offset=0):
        rng = np.random.default_rng(1234 + offset)
        self.x = rng.normal(size=(n, features)).astype(np.float32)
        w = np.random.default_rng(99).normal(size=(features, 1))
        self.y = (np.tanh(self.x @ w) + 0.05 * rng.normal(size=(n, 1))).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class ToyModule(Module):
    """Dense(4, hidden) -> tanh -> Dense(hidden, 1), MSE, Adam.

    scheduler: None, "step" (StepLR every ``step_size`` updates, halving) or "plateau_step" (ReduceLROnPlateau on
    val_loss stepped every update, patience ``step_size``). val_script: a list of values logged as
    ``val_loss`` by successive validation runs instead of the real loss (for EarlyStopping). images: return a
    (T, C, H, W) clip from ``images_for_logging``.
    """

    def __init__(self, hidden=8, lr=0.01, scheduler=None, step_size=5, val_script=None, images=False, features=4):
        super().__init__()
        self.save_hyperparameters("val_script")
        self.l1 = nn.Dense(features, hidden)
        self.l2 = nn.Dense(hidden, 1)
        self.lr, self.scheduler, self.step_size = lr, scheduler, step_size
        self.val_script, self.images, self.val_runs = val_script, images, 0

    def construct(self, x):
        return self.l2(ops.tanh(self.l1(x)))

    def training_step(self, batch):
        x, y = batch
        err = self.construct(x) - y
        return (err * err).mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = float(((self(x).asnumpy() - y.asnumpy()) ** 2).mean())
        if self.val_script is not None:
            loss = self.val_script[min(self.val_runs, len(self.val_script) - 1)]
        self.log("val_loss", loss, prog_bar=True)

    def on_validation_end(self):
        if not self.trainer.sanity_checking:
            self.val_runs += 1

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", float(((self(x).asnumpy() - y.asnumpy()) ** 2).mean()))

    def images_for_logging(self, batch):
        if not self.images:
            return None
        x = batch[0].asnumpy()
        clip = np.stack([np.tile((x[t % len(x)] + 2) / 4, (1, 6, 2)) for t in range(3)])  # (T=3, C=1, H=6, W=8)
        return {"frames": clip}

    def configure_optimizers(self):
        optimizer = nn.Adam(self.trainable_params(), learning_rate=self.lr)
        if self.scheduler == "step":
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": StepLR(optimizer, self.step_size, 0.5), "interval": "step"}}
        if self.scheduler == "plateau_step":  # stepped every update with the latest val_loss
            plateau = ReduceLROnPlateau(optimizer, factor=0.5, patience=self.step_size)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "interval": "step", "monitor": "val_loss"}}
        return optimizer


def loaders(n_train=32, n_val=8, batch_size=4, shuffle=True):
    train = DataLoader(ToyData(n_train), batch_size=batch_size, shuffle=shuffle, seed=7)
    val = DataLoader(ToyData(n_val, offset=1), batch_size=batch_size)
    return train, val


def make_module(seed=0, **kwargs):
    ms.set_seed(seed)
    return ToyModule(**kwargs)


def make_trainer(root, **kwargs):
    """A Trainer writing under ``root``: 2 epochs, logging every step, no progress bar, unless overridden."""
    settings = dict(max_epochs=2, log_every_n_steps=1, enable_progress_bar=False, default_root_dir=str(root),
                    num_sanity_val_steps=0)
    settings.update(kwargs)
    return Trainer(**settings)


def params_of(trainer):
    """Every parameter of the train step (weights, Adam moments, step counters) as numpy, by name."""
    return {p.name: p.asnumpy().copy() for p in trainer.train_step.get_parameters()}


# == the training job of the resume tests ==============================================================================
class KillSelf(Callback):
    """SIGKILLs its own process at global step ``step``, at the end of that batch (``where="batch_end"``) or of the
    epoch that reaches it (``"epoch_end"``), after ModelCheckpoint (order 100) has saved. Prints ``RESUMED step=...``
    when fit starts and ``STEP n`` after each batch, for the tests that start, kill and resume jobs (toy.py, gan.py).
    """

    order = 200

    def __init__(self, where, step):
        if where not in ("batch_end", "epoch_end", ""):
            raise ValueError(f"KillSelf(where={where!r}): use 'batch_end' or 'epoch_end'")
        self.where, self.step = where, step

    def on_fit_start(self, trainer, module):
        print(f"RESUMED step={trainer.global_step} epoch={trainer.current_epoch} batches={trainer._batches_done}",
              flush=True)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        print(f"STEP {trainer.global_step}", flush=True)
        if self.where == "batch_end" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_epoch_end(self, trainer, module):
        if self.where == "epoch_end" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv=None):
    from callbacks import LearningRateMonitor, ModelCheckpoint

    parser = argparse.ArgumentParser(description="train the toy model; optionally resume, or kill self at a step")
    parser.add_argument("root")
    parser.add_argument("--out", help="write every train-step parameter here (.npz) at the end")
    parser.add_argument("--ckpt", default=None, help="ckpt_path for fit: a path, 'last' or 'best'")
    parser.add_argument("--every", choices=["step", "epoch"], default="step", help="ModelCheckpoint trigger")
    parser.add_argument("--kill", default="", help="batch_end:N or epoch_end:N (SIGKILL self at global step N)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    where, _, step = args.kill.partition(":")
    checkpoint = (ModelCheckpoint(every_n_train_steps=1, save_last=True) if args.every == "step"
                  else ModelCheckpoint(save_last=True))
    train, val = loaders()
    trainer = make_trainer(args.root, max_epochs=args.epochs, num_sanity_val_steps=2,
                           callbacks=[checkpoint, LearningRateMonitor("step"), KillSelf(where, int(step or -1))])
    module = make_module(scheduler="step")
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=args.ckpt)
    if args.out:
        np.savez(args.out, **params_of(trainer))
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
