#!/usr/bin/env python3
"""Instructions in each GEMV kernel's main loop, from a cuobjdump -sass listing.

    cuobjdump -sass build/kernels/CMakeFiles/tandem_kernels_cuda.dir/cuda/linear.cu.o \
        | tools/sass_loop_count.py

For every kernel instantiated on a DType (gemv_kernel, gate_up_kernel, down_kernel, ...) it
prints the largest loop (the span from a backward branch's target to the branch) and the
function's total. The GEMV loop body covers 4 chunks of 8 values per lane (two rows, unrolled
twice), so instructions per weight byte per lane = loop / (4 * bytes of 8 values of the type):
q8_0 8.5, q4_0 4.5, q5_0 5.5, q4_k 4.5, q5_k 5.5, q6_k 6.5625, bf16 16. A rough count: the
largest backward branch is taken as the main loop.
"""
import re
import sys

NAMES = {0: "f32", 1: "f16", 2: "bf16", 5: "q8_0", 6: "q4_0", 7: "q4_k", 8: "q5_k", 9: "q6_k",
         11: "q5_0"}


def report(name, instrs):
    m = re.search(r"(\w+?_kernel)ILNS_5DTypeE(\d+)E(?:Li(\d+)E)?", name)
    if not m:
        return
    best = 0
    for addr, text in instrs.items():
        b = re.search(r"BRA (0x[0-9a-f]+)", text)
        if b and int(b.group(1), 16) < addr:
            target = int(b.group(1), 16)
            best = max(best, sum(1 for a in instrs if target <= a <= addr))
    kernel = re.sub(r"^.*_cu_[0-9a-f]+\d\d", "", m.group(1))
    tokens = f" tokens<={m.group(3)}" if m.group(3) else ""
    dtype = NAMES.get(int(m.group(2)), m.group(2))
    print(f"{kernel} {dtype}{tokens}: loop {best}, total {len(instrs)}")


def main():
    name, instrs = None, {}
    for line in sys.stdin:
        f = re.search(r"Function : (\S+)", line)
        if f:
            if name:
                report(name, instrs)
            name, instrs = f.group(1), {}
            continue
        i = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if i and name:
            instrs[int(i.group(1), 16)] = i.group(2)
    if name:
        report(name, instrs)


if __name__ == "__main__":
    main()
