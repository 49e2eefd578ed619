"""The callbacks of msforge runs (base class: ``msforge.Callback``); one callback per module.

A Trainer adds ModelCheckpoint(save_last=True), TensorBoard, CSVLogger and ProgressBar unless told otherwise.
"""
from callbacks.csv_logger import CSVLogger
from callbacks.early_stopping import EarlyStopping
from callbacks.lr_monitor import LearningRateMonitor
from callbacks.model_checkpoint import ModelCheckpoint
from callbacks.progress_bar import ProgressBar
from callbacks.tensorboard import TensorBoard
from callbacks.timer import Timer

__all__ = ["ModelCheckpoint", "EarlyStopping", "TensorBoard", "CSVLogger", "ProgressBar", "LearningRateMonitor", "Timer"]
