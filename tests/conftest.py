import os
import sys

import msforge  # noqa: F401  (caps oneDNN's ISA before mindspore loads)

sys.path.insert(0, os.path.dirname(__file__))


import mindspore as ms  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def graph_mode():
    """The mode the Trainer compiles the train step in, for a whole test module (``pytestmark = usefixtures``)."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)
