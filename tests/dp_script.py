"""Run by tests/test_distributed.py, alone or under msrun: a tiny regression fit, its weights saved as .npy."""
import argparse
import os
import signal

import numpy as np
from mindspore import nn

import msforge
from msforge import Callback, DataLoader, Module, Trainer


class Reg(Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(8, 1, weight_init="zeros", bias_init="zeros")

    def construct(self, x):
        return self.fc(x)

    def training_step(self, batch):
        x, y = batch
        return ((self.construct(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", float(((self(x).asnumpy() - y.asnumpy()) ** 2).mean()))

    def configure_optimizers(self):
        return nn.Adam(self.trainable_params(), learning_rate=0.05)


class Data:
    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, 8)).astype(np.float32)
        self.y = (self.x @ np.arange(8.0)[:, None]).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class KillRank(Callback):
    def __init__(self, rank, batch_idx):
        self.rank, self.batch_idx = rank, batch_idx

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and batch_idx == self.batch_idx:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--ckpt", default=None)
    p.add_argument("--kill-rank", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--spe", type=int, default=1, help="steps_per_execution")
    a = p.parse_args()
    callbacks = [KillRank(a.kill_rank, 5)] if a.kill_rank is not None else []
    trainer = Trainer(max_epochs=a.epochs, strategy=a.strategy, default_root_dir=a.root, num_sanity_val_steps=0,
                      enable_progress_bar=False, log_every_n_steps=1, callbacks=callbacks,
                      steps_per_execution=a.spe)
    model = Reg()
    trainer.fit(model, train_dataloaders=DataLoader(Data(128), a.batch, shuffle=True, seed=7),
                val_dataloaders=DataLoader(Data(32, seed=1), 8), ckpt_path=a.ckpt)
    np.save(f"{a.out}.rank{trainer.global_rank}.npy", model.fc.weight.asnumpy())
    with open(f"{a.out}.rank{trainer.global_rank}.txt", "w") as f:
        f.write(f"{trainer.global_step} {trainer.callback_metrics['val_loss']!r} {trainer.log_dir}\n")


if __name__ == "__main__":
    msforge.seed_everything(0)
    main()
