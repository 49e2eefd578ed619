"""Manual optimization: several optimizers stepped from a host-side training_step with Module.manual_step
(tests/gan.py), trained for real in graph mode; exact resume after SIGKILL; the one-line errors."""
import csv
import os
import re
import signal
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from gan import CENTER, GAN, checkpoint_arrays, generated_center, train_loader
from msforge import MisconfigurationError, Trainer
from toy import loaders, make_module, make_trainer

pytestmark = pytest.mark.usefixtures("graph_mode")
GAN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gan.py")


def gan_trainer(root, **kwargs):
    return Trainer(**{"max_epochs": 3, "log_every_n_steps": 4, "enable_progress_bar": False,
                      "enable_model_summary": False, "default_root_dir": str(root), **kwargs})


def test_the_gan_learns_the_real_points_with_two_optimizers_each_updating_only_its_own_net(tmp_path):
    ms.set_seed(0)
    module = GAN()
    before = generated_center(module)
    generator = {p.name: p.asnumpy().copy() for p in module.generator.trainable_params()}
    discriminator = {p.name: p.asnumpy().copy() for p in module.discriminator.trainable_params()}
    trainer = gan_trainer(tmp_path)
    trainer.fit(module, train_dataloaders=train_loader())
    after = generated_center(module)
    assert trainer.global_step == 2 * 3 * 16  # Lightning counts every optimizer step: 2 per batch
    assert np.linalg.norm(after - CENTER) < 0.25 * np.linalg.norm(before - CENTER), (before, after)
    assert all(not np.array_equal(p.asnumpy(), generator[p.name]) for p in module.generator.trainable_params())
    assert all(not np.array_equal(p.asnumpy(), discriminator[p.name]) for p in module.discriminator.trainable_params())
    # one compiled step per (optimizer, loss function), reused for every batch
    assert len(trainer._manual_steps) == 2
    with open(next((tmp_path / "msforge_logs").glob("version_*/metrics.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    # self.log in a manual training_step logs per step, as Lightning does: one event per call
    for name in ("d_loss", "g_loss"):
        logged = [r for r in rows if r.get(name)]
        assert len(logged) == 3 * 16 and all(np.isfinite(float(r[name])) for r in logged)
        assert [int(r["step"]) for r in logged[:3]] == [2, 4, 6]


def test_a_step_that_only_updates_one_optimizer_leaves_the_other_nets_weights_alone(tmp_path):
    class DiscriminatorOnly(GAN):
        def training_step(self, batch, batch_idx):
            real, z = batch
            self.manual_step(self.optimizers()[0], self.discriminator_loss, real, z)

    ms.set_seed(0)
    module = DiscriminatorOnly()
    generator = {p.name: p.asnumpy().copy() for p in module.generator.trainable_params()}
    gan_trainer(tmp_path, max_epochs=1).fit(module, train_dataloaders=train_loader(n=64))
    assert all(np.array_equal(p.asnumpy(), generator[p.name]) for p in module.generator.trainable_params())


def run_gan(root, *args, expect_rc=0):
    proc = subprocess.run([sys.executable, GAN_SCRIPT, str(root), *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("loss_scale", [None, "dynamic"])
def test_sigkill_and_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path, loss_scale):
    """Both optimizers' moments, both schedulers, each optimizer's own loss scale and the data order come back."""
    extra = ["--loss-scale", loss_scale] if loss_scale else []
    run_gan(tmp_path / "whole", "--out", str(tmp_path / "whole.npz"), *extra)
    out = run_gan(tmp_path / "cut", "--kill", "22", *extra, expect_rc=-signal.SIGKILL)  # batch 11 of 16 in epoch 0
    assert "RESUMED step=0" in out
    out = run_gan(tmp_path / "cut", "--ckpt", "last", "--out", str(tmp_path / "cut.npz"), *extra)
    assert re.search(r"RESUMED step=22\b", out), out[-500:]
    whole, cut = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "cut.npz")
    assert sorted(whole.files) == sorted(cut.files)
    assert any(name.startswith("optimizer_1.moment1.") for name in whole.files)
    if loss_scale:
        assert {"optimizer_0.loss_scale", "optimizer_1.loss_scale"} <= set(whole.files)
    differing = [k for k in whole.files if not np.array_equal(whole[k], cut[k])]
    assert not differing, differing


class TwoOptimizersAutomatic(GAN):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = True

    def training_step(self, batch):
        real, z = batch
        return self.discriminator_loss(real, z)


def test_several_optimizers_under_automatic_optimization_is_a_one_line_error_naming_the_switch(tmp_path):
    with pytest.raises(MisconfigurationError, match=r"returned 2 optimizers.*automatic_optimization = False") as err:
        gan_trainer(tmp_path).fit(TwoOptimizersAutomatic(), train_dataloaders=train_loader(n=64))
    assert "\n" not in str(err.value)


def test_manual_step_with_an_optimizer_configure_optimizers_did_not_return_is_refused(tmp_path):
    class Stranger(GAN):
        def training_step(self, batch, batch_idx):
            real, z = batch
            self.manual_step(nn.SGD(self.generator.trainable_params()), self.generator_loss, z)

    with pytest.raises(MisconfigurationError, match=r"manual_step\(\) got a SGD that configure_optimizers\(\) did "):
        gan_trainer(tmp_path).fit(Stranger(), train_dataloaders=train_loader(n=64))


def test_manual_step_under_automatic_optimization_and_accumulation_with_manual_are_refused(tmp_path):
    module = make_module()
    train, _ = loaders()
    with pytest.raises(RuntimeError, match=r"manual_step\(\) was called outside a Trainer run"):
        module.manual_step(None, None)
    with pytest.raises(MisconfigurationError, match=r"accumulate_grad_batches=2 with manual optimization"):
        gan_trainer(tmp_path, accumulate_grad_batches=2).fit(GAN(), train_dataloaders=train_loader(n=64))
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, train_dataloaders=train)
    with pytest.raises(MisconfigurationError, match=r"manual_step\(\) is for manual optimization"):
        module.manual_step(trainer.optimizer, module.training_step, train)


def test_learning_rate_monitor_logs_each_optimizers_rate(tmp_path):
    from callbacks import LearningRateMonitor
    from gan import ScheduledGAN

    ms.set_seed(0)
    trainer = gan_trainer(tmp_path, max_epochs=2, callbacks=[LearningRateMonitor(logging_interval="epoch")])
    trainer.fit(ScheduledGAN(), train_dataloaders=train_loader())
    with open(next((tmp_path / "msforge_logs").glob("version_*/metrics.csv")), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr/optimizer_0")]
    # each StepLR halves its optimizer's rate every 10 of the module's scheduler steps (16 batches an epoch)
    assert [float(r["lr/optimizer_0"]) for r in rows] == pytest.approx([GAN().hparams.lr, GAN().hparams.lr * 0.5])
    assert [float(r["lr/optimizer_1"]) for r in rows] == pytest.approx([float(r["lr/optimizer_0"]) for r in rows])
