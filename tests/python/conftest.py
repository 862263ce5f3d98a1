"""Fixtures of the bindings' tests: the `tandem` module from the build tree (CTest puts its
folder on PYTHONPATH), the demo model, its golden reference and a numpy reader of safetensors."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import tandem

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo" / "tandem-demo-moe"
GOLDEN = ROOT / "tests" / "data" / "golden" / "demo" / "reference.safetensors"

NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """name -> numpy array; bf16 tensors widened to float32 (exactly: bf16 is f32's top half)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[8 + n + begin:8 + n + end]
        if info["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, NUMPY_DTYPES[info["dtype"]])
        tensors[name] = a.reshape(info["shape"]).copy()
    return tensors


def engine_args(**fields):
    # Two threads, unpinned: CI machines are small and shared.
    return {"n_threads": 2, "pin_threads": False, **fields}


@pytest.fixture(scope="module")
def engine():
    return tandem.Engine(str(DEMO), **engine_args())


@pytest.fixture(scope="module")
def golden():
    return read_safetensors(GOLDEN)


@pytest.fixture(scope="module")
def demo_weights():
    return read_safetensors(DEMO / "model.safetensors")


@pytest.fixture
def rng(request):
    # Fresh inputs every run; the seed is printed so that a failure can be replayed.
    seed = np.random.SeedSequence().entropy % 2**32
    print(f"{request.node.name}: numpy seed {seed}")
    return np.random.default_rng(seed)
