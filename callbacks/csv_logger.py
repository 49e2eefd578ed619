"""CSVLogger: ``metrics.csv`` with one row per logging event, and ``hparams.yaml``, in ``trainer.log_dir``.

Columns: ``step`` (global step), ``epoch``, then every metric in the order first seen; a row leaves the metrics it
does not carry empty. When a new metric appears the file is rewritten with the wider header (to a temporary file, then
``os.replace``), so the file on disk is always a complete, readable CSV. Values are written with ``repr`` precision.
Rank 0 only; nothing is written before the first event (or ``on_fit_start``).
"""
import csv
import os

import numpy as np
import yaml

from msforge import Callback


def plain(value):
    """``value`` with only YAML-safe types: containers recursed, numpy scalars unwrapped, the rest as str()."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class CSVLogger(Callback):
    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir=None):
        self._log_dir_arg = log_dir
        self.log_dir = log_dir
        self._columns = None

    @property
    def metrics_file_path(self):
        return os.path.join(self.log_dir, self.NAME_METRICS_FILE)

    def setup(self, trainer, module, stage):
        self._columns = None

    def _start(self, trainer):
        """Open the run folder on first use: read an existing header, write hparams.yaml."""
        if self._columns is not None:
            return
        self.log_dir = self._log_dir_arg or trainer.log_dir
        os.makedirs(self.log_dir, exist_ok=True)
        self._columns = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self._columns = next(csv.reader(f), [])
        hparams = plain(dict(getattr(trainer.module, "hparams", None) or {}))
        with open(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), "w") as f:
            yaml.safe_dump(hparams, f, sort_keys=False)

    def on_fit_start(self, trainer, module):
        if trainer.is_global_zero:
            self._start(trainer)

    def on_log_metrics(self, trainer, module, metrics, step):
        if not trainer.is_global_zero:
            return
        self._start(trainer)
        row = {"step": int(step), **metrics, "epoch": int(trainer.current_epoch)}
        new = [k for k in ("step", "epoch", *metrics) if k not in self._columns]
        if new:
            self._rewrite(self._columns + new, row)
        else:
            with open(self.metrics_file_path, "a", newline="") as f:
                csv.DictWriter(f, self._columns).writerow(row)

    def _rewrite(self, columns, row):
        rows = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                rows = list(csv.DictReader(f))
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows + [row])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.metrics_file_path)
        self._columns = columns
