"""ModelSummary: printed at fit start by default, one row per sub-cell down to max_depth, Lightning's totals."""
import pytest
from mindspore import nn

from callbacks import ModelSummary
from callbacks.model_summary import readable_count, summarize
from msforge import MisconfigurationError
from toy import loaders, make_module, make_trainer

pytestmark = pytest.mark.usefixtures("graph_mode")


class Nested(nn.Cell):
    def __init__(self):
        super().__init__()
        self.encoder = nn.SequentialCell(nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 8))
        self.head = nn.Dense(8, 1)
        self.head.bias.requires_grad = False  # 1 non-trainable parameter


def test_fit_prints_the_summary_by_default_and_not_when_disabled(tmp_path, capsys):
    train, val = loaders()
    make_trainer(tmp_path, max_epochs=1).fit(make_module(hidden=8), train_dataloaders=train, val_dataloaders=val)
    out = capsys.readouterr().out
    # toy: Dense(4, 8) -> tanh -> Dense(8, 1): 40 + 9 = 49 parameters
    for line in ["  | Name | Type  | Params", "0 | l1   | Dense | 40", "1 | l2   | Dense | 9",
                 "49        Trainable params", "0         Non-trainable params", "49        Total params",
                 "0.000     Total estimated model params size (MB)"]:
        assert line in out, out
    make_trainer(tmp_path, max_epochs=1, enable_model_summary=False).fit(make_module(), train_dataloaders=train)
    assert "Trainable params" not in capsys.readouterr().out


def test_max_depth_selects_the_rows_and_the_totals_count_trainable_and_frozen_weights():
    net = Nested()
    assert [ln.split("|")[1].strip() for ln in summarize(net, 1).splitlines()[2:4]] == ["encoder", "head"]
    deep = summarize(net, -1)
    for row in ["0 | encoder   | SequentialCell | 112", "1 | encoder.0 | Dense          | 40",
                "2 | encoder.1 | ReLU           | 0", "3 | encoder.2 | Dense          | 72", "4 | head      | Dense  "]:
        assert row in deep, deep
    assert "120       Trainable params" in deep and "1         Non-trainable params" in deep
    assert "121       Total params" in deep
    assert summarize(net, 2) == deep  # nothing deeper than 2 levels here


def test_readable_counts_and_bad_depth():
    assert [readable_count(n) for n in (0, 999, 1000, 50_400, 101_000, 999_600, 1_040_612, 2_500_000_000)] == \
        ["0", "999", "1.0 K", "50.4 K", "101 K", "1.0 M", "1.0 M", "2.5 B"]
    with pytest.raises(MisconfigurationError, match=r"ModelSummary\(max_depth=-2\)"):
        ModelSummary(max_depth=-2)
