"""The Callback base class: one no-op method per hook, Lightning's names and arguments."""


class Callback:
    """Subclass and override the hooks you need. Every hook gets ``(trainer, module, ...)``.

    Callbacks run before the module at each hook, in list order. A callback asks the trainer to stop by setting
    ``trainer.should_stop = True``; it never raises to end training. ``state_dict``/``load_state_dict`` are saved in
    and restored from checkpoints under ``state_key``.
    """

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass

    def setup(self, trainer, module, stage): pass
    def teardown(self, trainer, module, stage): pass
    def on_fit_start(self, trainer, module): pass
    def on_fit_end(self, trainer, module): pass
    def on_sanity_check_start(self, trainer, module): pass
    def on_sanity_check_end(self, trainer, module): pass
    def on_train_start(self, trainer, module): pass
    def on_train_end(self, trainer, module): pass
    def on_train_epoch_start(self, trainer, module): pass
    def on_train_epoch_end(self, trainer, module): pass
    def on_train_batch_start(self, trainer, module, batch, batch_idx): pass
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx): pass
    def on_before_optimizer_step(self, trainer, module, optimizer): pass
    def on_validation_start(self, trainer, module): pass
    def on_validation_end(self, trainer, module): pass
    def on_validation_epoch_start(self, trainer, module): pass
    def on_validation_epoch_end(self, trainer, module): pass
    def on_validation_batch_start(self, trainer, module, batch, batch_idx): pass
    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx): pass
    def on_test_start(self, trainer, module): pass
    def on_test_end(self, trainer, module): pass
    def on_test_epoch_start(self, trainer, module): pass
    def on_test_epoch_end(self, trainer, module): pass
    def on_test_batch_start(self, trainer, module, batch, batch_idx): pass
    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx): pass
    def on_predict_start(self, trainer, module): pass
    def on_predict_end(self, trainer, module): pass
    def on_predict_epoch_start(self, trainer, module): pass
    def on_predict_epoch_end(self, trainer, module): pass
    def on_predict_batch_start(self, trainer, module, batch, batch_idx): pass
    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx): pass
    def on_save_checkpoint(self, trainer, module, checkpoint): pass
    def on_load_checkpoint(self, trainer, module, checkpoint): pass
    def on_exception(self, trainer, module, exception): pass
    # msforge's additions. Every logging event (a dict of Python floats at one global step) reaches loggers here:
    def on_log_metrics(self, trainer, module, metrics, step): pass

    # Parameters this callback keeps in checkpoint files, as (name, Parameter) pairs; a resume assigns them back.
    # A name of a module weight stores that Parameter in the weight's place (EMAWeightAveraging's averaged weights).
    def checkpoint_parameters(self, trainer, module):
        return []
