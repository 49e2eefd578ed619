"""Video-prediction models for msforge: the VideoPredictionModule base and the models on it (ConvLSTM, ConvGRU,
PredRNN, PredRNN-v2, SimVP, TAU)."""
from models.base import VideoPredictionModule
from models.convlstm import (PRESETS, ConvLSTMCell, ConvLSTMModule, EncoderForecaster, count_parameters,
                             cpu_small_config, depth_to_space, seed_config, space_to_depth)
from models.convgru import ConvGRUCell, ConvGRUModule
from models.predrnn import PredRNN, STLSTMCell
from models.predrnn_v2 import PredRNNv2
from models.simvp import SimVP
from models.tau import TAU

__all__ = ["VideoPredictionModule", "ConvLSTMCell", "ConvLSTMModule", "EncoderForecaster", "PRESETS", "seed_config",
           "cpu_small_config", "space_to_depth", "depth_to_space", "count_parameters", "ConvGRUCell", "ConvGRUModule",
           "PredRNN", "STLSTMCell", "PredRNNv2", "SimVP", "TAU"]
