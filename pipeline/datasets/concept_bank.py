"""The concept bank: the evaluation benchmarks' class names as natural words.

A concept's id is its index in the bank. Like the authors' bank, it is the union of the
evaluation datasets' class names (so it includes "background").
"""
from __future__ import annotations

from typing import Iterable

from pipeline.datasets.specs import benchmark_classes

_STUFF_SUFFIXES = ("-other", "-stuff", "-merged")


def prompt_name(name: str) -> str:
    """Dataset class name -> natural words: "sky-other" -> "sky", "wall-brick" -> "wall brick"."""
    name = name.lower()
    for suffix in _STUFF_SUFFIXES:
        name = name.removesuffix(suffix)
    return " ".join(name.replace("-", " ").replace("_", " ").split())


def concept_bank(benchmarks: Iterable[str]) -> tuple[str, ...]:
    """Sorted unique prompt names of the benchmarks' classes; KeyError for an unknown one."""
    return tuple(sorted({prompt_name(c) for b in benchmarks for c in benchmark_classes(b)}))
