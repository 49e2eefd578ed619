"""A callback bench/startup.py adds to the experiment's config: prints ``MSFORGE_BENCH_MARK <event> <unix time>``
lines at the events that matter for start-up and the test stage, and times ``msforge.metrics.video_metrics`` (the
test metrics, SSIM included) while it is imported."""
import sys
import time

from msforge import Callback, metrics

_metric_seconds = [0.0]
_video_metrics = metrics.video_metrics


def _timed_video_metrics(*args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _video_metrics(*args, **kwargs)
    finally:
        _metric_seconds[0] += time.perf_counter() - t0


metrics.video_metrics = _timed_video_metrics  # models call it as msforge.metrics.video_metrics


def mark(event, value=None):
    value = time.time() if value is None else value
    sys.stdout.write(f"MSFORGE_BENCH_MARK {event} {value!r}\n")
    sys.stdout.flush()


class StartupMark(Callback):
    def __init__(self):
        self.train_batches = 0

    def setup(self, trainer, module, stage):
        mark(f"setup_{stage}")

    def on_sanity_check_start(self, trainer, module):
        mark("sanity_start")

    def on_sanity_check_end(self, trainer, module):
        mark("sanity_end")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.train_batches == 0:
            mark("first_train_batch_start")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.train_batches += 1
        if self.train_batches == 1:
            mark("first_train_batch_end")
        elif self.train_batches == 2:
            mark("second_train_batch_end")

    def on_test_start(self, trainer, module):
        _metric_seconds[0] = 0.0
        mark("test_start")

    def on_test_end(self, trainer, module):
        mark("test_end")
        mark("test_metric_seconds", _metric_seconds[0])

    def teardown(self, trainer, module, stage):
        mark(f"teardown_{stage}")


def _loss_only_module():
    from models.convlstm import ConvLSTMModule

    class LossOnlyConvLSTM(ConvLSTMModule):
        """The default model with ``training_step`` returning the loss Tensor only (no dict): MindSpore 2.10's compile
        cache cannot store a graph that returns a dict (it becomes a PyExecute node: "Cannot export a PyExecute CNode
        in MindIR"), so bench/startup.py times the cache with this variant when the real model's cache run fails."""

        def training_step(self, batch):
            inputs, targets = batch
            return self.compute_loss(self.construct(inputs), targets)

    return LossOnlyConvLSTM


LossOnlyConvLSTM = _loss_only_module()
