"""ModelSummary: the module's layers and parameter counts, printed as fit starts (once its first training step has
run), as Lightning prints them.

One row per sub-cell down to ``max_depth`` levels of nesting (1: the module's direct children; -1: every level; 0:
nothing is printed), then the trainable, non-trainable and total parameter counts and their size in MB at 4 bytes a
parameter. A weight shared by several cells counts once in the totals. The Trainer adds one unless
``enable_model_summary=False`` or a ModelSummary is among its callbacks.
"""
import math

from msforge import Callback, MisconfigurationError


class ModelSummary(Callback):
    def __init__(self, max_depth=1):
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < -1:
            raise MisconfigurationError(f"ModelSummary(max_depth={max_depth!r}): use an int >= 0, or -1 for every "
                                        "level")
        self.max_depth = max_depth
        self._printed = False

    def on_fit_start(self, trainer, module):
        self._printed = False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        # after the first step rather than at on_fit_start: a run refused by its first step prints only its error
        if not self._printed and self.max_depth != 0 and trainer.is_global_zero:
            print(summarize(module, self.max_depth), flush=True)
        self._printed = True


def layer_rows(module, max_depth):
    """``[(name, type name, parameter count)]`` for the sub-cells of ``module`` down to ``max_depth`` (-1: all)."""
    rows = []
    for name, cell in module.cells_and_names():
        depth = name.count(".") + 1
        if not name or (max_depth != -1 and depth > max_depth):
            continue
        rows.append((name, type(cell).__name__, _count(cell.get_parameters())))
    return rows


def parameter_totals(module):
    """``(trainable, non_trainable)`` parameter counts of ``module``, each weight once."""
    params = list(module.get_parameters())  # unique Parameter objects
    trainable = _count(p for p in params if p.requires_grad)
    return trainable, _count(params) - trainable


def summarize(module, max_depth=1):
    """The table ModelSummary prints."""
    rows = layer_rows(module, max_depth)
    header = ("", "Name", "Type", "Params")
    table = [(str(i), name, kind, readable_count(n)) for i, (name, kind, n) in enumerate(rows)]
    widths = [max(len(r[c]) for r in [header] + table) for c in range(4)]
    lines = []
    if table:
        def line(cells):
            return " | ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()

        rule = "-" * len(line(header))
        lines += [line(header), rule] + [line(r) for r in table] + [rule]
    trainable, frozen = parameter_totals(module)
    total = trainable + frozen
    lines += [f"{readable_count(trainable):<10}Trainable params", f"{readable_count(frozen):<10}Non-trainable params",
              f"{readable_count(total):<10}Total params",
              f"{total * 4 / 1e6:<10.3f}Total estimated model params size (MB)"]
    return "\n".join(lines)


def readable_count(n):
    """``950``, ``50.4 K``, ``101 K``, ``1.0 M``: three significant digits at most, Lightning's style."""
    if n < 1000:
        return str(int(n))
    units = ["K", "M", "B", "T"]
    group = min(int(math.log10(n)) // 3, len(units))
    value = n / 1000**group
    if value >= 999.5 and group < len(units):  # 999,600 is 1.0 M, not 1000 K
        group, value = group + 1, value / 1000
    shown = f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{shown} {units[group - 1]}"


def _count(params):
    return sum(int(math.prod(p.shape)) for p in params)
