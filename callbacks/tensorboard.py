"""TensorBoard: every logging event as scalars (x = global step), images from the module, hparams at the end of fit.

Writes with tensorboardX into ``trainer.log_dir`` (rank 0 only; the writer opens at the first write, so a run that
fails before training leaves no folder). Scalars: whatever the Trainer logs (train_* per ``log_every_n_steps``, *_epoch
means, epoch, epoch_time, throughput, val/test metrics, loss_scale and skipped_steps with loss scaling).

Learning rate: with a ``LearningRateMonitor`` among the callbacks its events arrive here (and in the CSV) like any
other metric; without one this callback writes ``lr`` itself, at the same steps and with the same names, to
TensorBoard only.

Images: at the first batch of each validation run (not the sanity check) ``module.images_for_logging(batch)`` may
return ``{tag: array}``; (N, C, H, W) or (N, H, W) becomes one row of N frames (a video clip reads left to right),
(B, T, C, H, W) a grid of B rows. Values are clipped to [0, 1]; C must be 1 or 3.

``log_graph=True``: MindSpore cells cannot be exported to TensorBoard's graph format (there is no tracer producing a
GraphDef), so the callback writes the printed cell structure as a text summary named "model" instead, and says so.
"""
import itertools
import math
import os
import warnings

import numpy as np

from msforge import Callback

from .lr_monitor import LearningRateMonitor, lr_metrics, step_log_due


_writer_ids = itertools.count()


def image_grid(array, pad=2):
    """An image tag's array as one CHW image: frames side by side, rows of a 5-D array stacked, ``pad`` px apart."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    if a.ndim == 4:
        a = a[None]
    if a.ndim != 5 or a.shape[2] not in (1, 3):
        raise ValueError(f"images_for_logging returned an array of shape {np.shape(array)}; use (N, C, H, W), "
                         "(N, H, W) or (B, T, C, H, W) with C = 1 or 3")
    rows, cols, c, h, w = a.shape
    grid = np.zeros((c, rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad), np.float32)
    for r in range(rows):
        for k in range(cols):
            grid[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = a[r, k]
    return np.clip(np.nan_to_num(grid), 0.0, 1.0)


def plain_hparams(hparams):
    """hparams as TensorBoard accepts them: bool, int, float and str; anything else as its str()."""
    return {str(k): v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in dict(hparams or {}).items()}


class TensorBoard(Callback):
    def __init__(self, log_dir=None, log_graph=False):
        self._log_dir_arg = log_dir
        self.log_dir = log_dir
        self.log_graph = log_graph
        self._writer = None
        self._write_lr = False
        self._lrs_used = self._step_before = None
        self._images_due = False

    @property
    def writer(self):
        return self._writer

    def _get_writer(self, trainer):
        if not trainer.is_global_zero:
            return None
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self.log_dir = self._log_dir_arg or trainer.log_dir
            # tensorboardX names the file by the second and the host only: a second writer opened in the same
            # second (test right after fit) would truncate the first one's file
            self._writer = SummaryWriter(self.log_dir, filename_suffix=f".{os.getpid()}.{next(_writer_ids)}")
        return self._writer

    # == scalars ======================================================================================================
    def on_log_metrics(self, trainer, module, metrics, step):
        writer = self._get_writer(trainer)
        if writer is not None:
            for name, value in metrics.items():
                writer.add_scalar(name, value, step)

    def setup(self, trainer, module, stage):
        self._write_lr = not any(isinstance(cb, LearningRateMonitor) for cb in trainer.callbacks)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self._write_lr:
            self._lrs_used, self._step_before = lr_metrics(trainer), trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._lrs_used is not None and step_log_due(trainer.global_step, self._step_before,
                                                       trainer.log_every_n_steps)[0]:
            writer = self._get_writer(trainer)
            for name, value in (self._lrs_used.items() if writer is not None else ()):
                writer.add_scalar(name, value, trainer.global_step)
        self._lrs_used = None

    # == graph, images, hparams =======================================================================================
    def on_fit_start(self, trainer, module):
        writer = self._get_writer(trainer)
        if self.log_graph and writer is not None:
            warnings.warn("TensorBoard(log_graph=True): MindSpore cells cannot be exported as a TensorBoard graph; "
                          "the cell structure is written as the text summary 'model' instead", stacklevel=2)
            writer.add_text("model", "<pre>" + repr(module) + "</pre>", trainer.global_step)

    def on_validation_start(self, trainer, module):
        self._images_due = not trainer.sanity_checking

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not self._images_due:
            return
        self._images_due = False
        writer = self._get_writer(trainer)
        images = module.images_for_logging(batch) if writer is not None else None
        for tag, array in (images or {}).items():
            writer.add_image(tag, image_grid(array), trainer.global_step, dataformats="CHW")

    def on_train_epoch_end(self, trainer, module):
        if self._writer is not None:
            self._writer.flush()

    def on_fit_end(self, trainer, module):
        writer = self._get_writer(trainer)
        hparams = plain_hparams(getattr(module, "hparams", None))
        if writer is None or not hparams:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        final = {k: v for k, v in trainer.callback_metrics.items() if math.isfinite(v)}
        for summary in hparams_summaries(hparams, final):
            writer.file_writer.add_summary(summary)
        writer.flush()

    def teardown(self, trainer, module, stage):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
