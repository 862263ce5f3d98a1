#!/usr/bin/env python3
"""Write tests/data/quant/: gguf-py's reference quantization and dequantization of each weight
type, for the bit-exactness test in tests/unit/test_quant.cpp (run by hand; CI only reads the
files). gguf-py quantizes Q8_0, Q4_0 and Q5_0 bit-exactly like ggml; for the K-quants it only
dequantizes, so their blocks are random bytes with sane scales, and the test checks Tandem's
dequantization of them.

    pip install gguf numpy
    python3 tools/make_quant_fixtures.py
"""

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "quant"
N = 1024  # elements per case: 32 Q8_0/Q4_0 blocks, 4 K-quant super-blocks


def random_k_blocks(rng, qtype, n):
    """Random K-quant blocks whose f16 scales are finite and moderate."""
    block_size, type_size = quants.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n // block_size, type_size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=(blocks.shape[0], 2)).astype(np.float16).view(np.uint8)
    if qtype == T.Q6_K:  # d is the last two bytes
        blocks[:, -2:] = scales[:, :2]
    else:  # d and dmin lead the block
        blocks[:, :4] = scales
    return blocks.reshape(-1)


def main():
    rng = np.random.default_rng(20261128)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    # q5_0 last: the cases before it draw the same random numbers as before it was added.
    for name, qtype in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_k", T.Q4_K), ("q5_k", T.Q5_K), ("q6_k", T.Q6_K),
                        ("q5_0", T.Q5_0)]:
        x = rng.standard_normal(N).astype(np.float32)
        x[:32] *= 1e-3  # a block of tiny values
        x[32:64] = 0.0  # an all-zero block
        check_quantize = qtype in (T.Q8_0, T.Q4_0, T.Q5_0)
        q = quants.quantize(x, qtype).reshape(-1) if check_quantize else random_k_blocks(rng, qtype, N)
        d = quants.dequantize(q, qtype).astype(np.float32).reshape(-1)
        files = {key: f"{name}.{key}.bin" for key in ("input", "quantized", "dequantized")}
        x.tofile(OUT / files["input"])
        q.tofile(OUT / files["quantized"])
        d.tofile(OUT / files["dequantized"])
        cases.append({"type": name, "n": N, "check_quantize": check_quantize, **files})
    index = {"generator": "tools/make_quant_fixtures.py", "gguf": version("gguf"), "cases": cases}
    (OUT / "index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
