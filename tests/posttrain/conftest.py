"""tools/posttrain's pure logic (numpy only): the modules are imported from that folder."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "posttrain"))


@pytest.fixture
def rng(request):
    # Fresh inputs every run; the seed is printed so that a failure can be replayed.
    seed = np.random.SeedSequence().entropy % 2**32
    print(f"{request.node.name}: numpy seed {seed}")
    return np.random.default_rng(seed)
