"""Training scripts for the three stages, the control and GAC-mini.

Importing this package pins the instruction set of the CPU kernels, before any training script
loads torch or numpy (``python -m training.X`` imports the package first; spawned workers inherit the
environment). Unpinned, torch, oneDNN and MKL use the widest the CPU has (AVX-512 on some
machines), whose float rounding differs from AVX2's, so the same seeded run would train other
weights on another machine. AVX2 is on every x86-64 server of the last decade, and the pins cost
nothing on an AVX2 machine. numpy's OpenBLAS (the least-squares baseline in the references) picks
its kernels by CPU model too: an AVX-512 EPYC fitted coefficients that differ in the 15th digit
until it was held to Haswell's (AVX2) kernels. A variable already set is left as it is.
"""

import os
import platform

CPU_KERNEL_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
                   "OPENBLAS_CORETYPE": "Haswell"}

if platform.machine() in ("x86_64", "AMD64"):
    for _name, _value in CPU_KERNEL_PINS.items():
        os.environ.setdefault(_name, _value)
