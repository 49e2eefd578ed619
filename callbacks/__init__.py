"""The callbacks of msforge runs (base class: ``msforge.Callback``); one callback per module.

A Trainer adds ModelCheckpoint(save_last=True), TensorBoard, CSVLogger, ProgressBar and ModelSummary unless told
otherwise. Callbacks here import only msforge's public names.
"""
from .csv_logger import CSVLogger
from .early_stopping import EarlyStopping
from .ema import EMAWeightAveraging
from .lr_monitor import LearningRateMonitor
from .model_checkpoint import ModelCheckpoint
from .model_summary import ModelSummary
from .progress_bar import ProgressBar
from .tensorboard import TensorBoard
from .timer import Timer

__all__ = ["ModelCheckpoint", "EarlyStopping", "TensorBoard", "CSVLogger", "ProgressBar", "LearningRateMonitor",
           "Timer", "ModelSummary", "EMAWeightAveraging"]
