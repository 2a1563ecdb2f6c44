"""The pipeline package. Importing it pins the CPU kernels that PyTorch picks, for runs that agree across machines.

PyTorch picks its CPU kernels by what the processor offers: ATen's vectorised kernels (AVX-512 or AVX2) and
oneDNN's (up to AVX-512 and AMX). Their sums round differently, so the same run gives other weights on another
CPU model, and a miniature run on CPU drifts far within a few hundred steps (`bench/cpu_numerics.py` shows it).
Capping all of them at AVX2, which every x86-64 machine of the last decade offers, and MKL's conditional numerical
reproducibility at the same level, makes the choice the same everywhere. An explicit environment setting wins.
The settings are read at the first CPU operation, so they hold as long as this package is imported before any
tensor work, as every stage and test does. GPU kernels are not affected. The thread count still matters:
torch uses one per physical core, and two machines agree bit for bit only with the same count.
"""
import os

CPU_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}

for _name, _value in CPU_NUMERICS.items():
    os.environ.setdefault(_name, _value)
