"""Trainer arguments that mean what they mean in Lightning: validation every N batches across epochs, a scheduler's
strict, fp16 with a dynamic loss scale by default, booleans that must be booleans."""
import pytest

from msforge import Callback, MisconfigurationError
from msforge.schedulers import ReduceLROnPlateau
from toy import ToyModule, loaders, make_module, make_trainer

pytestmark = pytest.mark.usefixtures("graph_mode")


class ValidationSteps(Callback):
    def __init__(self):
        self.steps = []

    def on_validation_start(self, trainer, module):
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def test_check_val_every_n_epoch_none_validates_every_n_batches_counted_across_epochs(tmp_path):
    train, val = loaders()  # 8 batches an epoch
    seen = ValidationSteps()
    trainer = make_trainer(tmp_path, max_epochs=3, check_val_every_n_epoch=None, val_check_interval=5,
                           callbacks=[seen], logger=False, enable_checkpointing=False)
    trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    assert seen.steps == [5, 10, 15, 20]  # not at epoch ends (8, 16, 24), and across them


def test_check_val_every_n_epoch_none_needs_an_int_interval(tmp_path):
    for interval in (None, 0.5):
        with pytest.raises(MisconfigurationError, match=rf"check_val_every_n_epoch=None with val_check_interval="
                                                        rf"{interval}: .*must be an int"):
            make_trainer(tmp_path, check_val_every_n_epoch=None, val_check_interval=interval)


class PlateauOnMissing(ToyModule):
    def __init__(self, strict):
        super().__init__()
        self.strict = strict

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": ReduceLROnPlateau(optimizer),
                                                         "monitor": "val_nothing", "strict": self.strict}}


def test_a_schedulers_strict_is_honoured(tmp_path):
    train, val = loaders()
    trainer = make_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    with pytest.raises(MisconfigurationError, match=r"monitors 'val_nothing'.*'strict': False"):
        trainer.fit(PlateauOnMissing(strict=True), train_dataloaders=train, val_dataloaders=val)
    trainer = make_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    with pytest.warns(RuntimeWarning, match=r"monitors 'val_nothing'.*skipped \(strict=False\)") as record:
        trainer.fit(PlateauOnMissing(strict=False), train_dataloaders=train, val_dataloaders=val)
    assert trainer.global_step == 16
    assert sum("val_nothing" in str(w.message) for w in record) == 1  # warned once, not every epoch
    with pytest.raises(MisconfigurationError, match=r"lr_scheduler strict='yes': must be True or False"):
        bad = PlateauOnMissing(strict="yes")
        make_trainer(tmp_path, max_epochs=1, logger=False).fit(bad, train_dataloaders=train)


def test_fp16_gets_a_dynamic_loss_scale_unless_loss_scale_says_otherwise(tmp_path):
    assert make_trainer(tmp_path, precision="16-mixed").loss_scale_config.dynamic
    assert make_trainer(tmp_path, precision="16-mixed", loss_scale=None).loss_scale_config is None
    assert make_trainer(tmp_path, precision="16-mixed", loss_scale=128).loss_scale_config.init == 128
    for precision in ("32", "bf16-mixed"):
        assert make_trainer(tmp_path, precision=precision).loss_scale_config is None


@pytest.mark.parametrize("name", ["logger", "enable_progress_bar", "enable_checkpointing", "enable_model_summary",
                                  "deterministic"])
def test_switches_must_be_booleans(tmp_path, name):
    with pytest.raises(MisconfigurationError, match=rf"^{name}='no': must be true or false$"):
        make_trainer(tmp_path, **{name: "no"})


def test_an_int_val_check_interval_longer_than_an_epoch_is_refused_as_in_lightning(tmp_path):
    train, val = loaders()  # 8 batches an epoch
    with pytest.raises(MisconfigurationError, match=r"val_check_interval=9 is more than the 8 training batches"):
        make_trainer(tmp_path, val_check_interval=9).fit(make_module(), train_dataloaders=train, val_dataloaders=val)
