"""A small GAN under manual optimization: two optimizers, each updated with ``Module.manual_step`` (README's example).

The generator maps 4-d noise to points in the plane; the real points are a Gaussian around (2, -1). Also runnable as a
script (``python tests/gan.py ROOT --help``): the job the manual-optimization resume test starts, kills and resumes.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import msforge  # noqa: E402,F401  (before mindspore: caps oneDNN's ISA)

import argparse  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import nn, ops  # noqa: E402

from msforge import Callback, DataLoader, Module, Trainer  # noqa: E402
from msforge.schedulers import StepLR  # noqa: E402

CENTER = np.array([2.0, -1.0], np.float32)


class GAN(Module):
    def __init__(self, latent=4, hidden=32, lr=2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped in training_step
        self.generator = nn.SequentialCell(nn.Dense(latent, hidden), nn.ReLU(), nn.Dense(hidden, 2))
        self.discriminator = nn.SequentialCell(nn.Dense(2, hidden), nn.ReLU(), nn.Dense(hidden, 1))

    def construct(self, z):
        return self.generator(z)

    # each loss is compiled; everything that changes per step comes in as an argument
    def discriminator_loss(self, real, z):
        fake = self.generator(z)
        return ops.softplus(-self.discriminator(real)).mean() + ops.softplus(self.discriminator(fake)).mean()

    def generator_loss(self, z):
        return ops.softplus(-self.discriminator(self.generator(z))).mean()

    def training_step(self, batch, batch_idx):
        real, z = batch
        d_opt, g_opt = self.optimizers()
        d_loss = self.manual_step(d_opt, self.discriminator_loss, real, z)  # updates the discriminator only
        g_loss = self.manual_step(g_opt, self.generator_loss, z)  # updates the generator only
        self.log("d_loss", d_loss, prog_bar=True)
        self.log("g_loss", g_loss, prog_bar=True)

    def configure_optimizers(self):
        lr = self.hparams.lr
        d_opt = nn.Adam(self.discriminator.trainable_params(), learning_rate=lr, beta1=0.5)
        g_opt = nn.Adam(self.generator.trainable_params(), learning_rate=lr, beta1=0.5)
        return [d_opt, g_opt]


class Points:
    """``n`` (real point, noise) pairs, the same for every construction with the same ``seed``."""

    def __init__(self, n=512, latent=4, seed=0):
        rng = np.random.default_rng(seed)
        self.real = (CENTER + 0.3 * rng.normal(size=(n, 2))).astype(np.float32)
        self.z = rng.normal(size=(n, latent)).astype(np.float32)

    def __len__(self):
        return len(self.real)

    def __getitem__(self, i):
        return self.real[i], self.z[i]


class ScheduledGAN(GAN):
    """The GAN with a StepLR per optimizer, stepped by the module (manual optimization steps its own schedulers)."""

    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        d_opt, g_opt = super().configure_optimizers()
        return [{"optimizer": d_opt, "lr_scheduler": StepLR(d_opt, 10, 0.5)},
                {"optimizer": g_opt, "lr_scheduler": StepLR(g_opt, 10, 0.5)}]


def generated_center(module, n=512):
    z = np.random.default_rng(123).normal(size=(n, module.hparams.latent)).astype(np.float32)
    return module(ms.Tensor(z)).asnumpy().mean(axis=0)


def train_loader(n=512, batch_size=32):
    return DataLoader(Points(n), batch_size=batch_size, shuffle=True, seed=3)


def checkpoint_arrays(trainer):
    """Everything a checkpoint holds of the run (weights, both optimizers' states, loss scales), by name."""
    return {name: p.asnumpy().copy() for name, p in trainer._checkpoint_params()}


# == the job of the resume test ========================================================================================
def main(argv=None):
    from callbacks import ModelCheckpoint
    from toy import KillSelf

    parser = argparse.ArgumentParser(description="train the GAN; optionally resume, or kill self at a global step")
    parser.add_argument("root")
    parser.add_argument("--out", help="write every checkpointed array here (.npz) at the end")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--kill", type=int, default=-1, help="SIGKILL self after this global step (2 per batch)")
    parser.add_argument("--loss-scale", default=None, help="'dynamic' for a loss scale per optimizer")
    args = parser.parse_args(argv)
    ms.set_seed(0)
    module = ScheduledGAN()
    trainer = Trainer(max_epochs=2, log_every_n_steps=2, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=args.root, loss_scale=args.loss_scale,
                      callbacks=[ModelCheckpoint(every_n_train_steps=2, save_last=True),
                                 KillSelf("batch_end", args.kill)])
    trainer.fit(module, train_dataloaders=train_loader(n=256), ckpt_path=args.ckpt)
    if args.out:
        np.savez(args.out, **checkpoint_arrays(trainer))
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
