"""The concept bank, and the class names the zero-shot prompts use.

A concept's id is its index in the bank (sorted, unique), as in the authors' code. Two banks
(`concepts.bank`):
- `authors`: the authors' file `class_names/7_dataset_eval_merged.txt`, shipped verbatim as
  `concept_banks/simzss_authors.txt`: 574 lines, 573 concepts once stripped, lowercased and
  deduplicated ("bed" is there twice, once as "bed "), as their loader does;
- `benchmarks`: derived from the zero-shot benchmarks' prompt names, as natural words
  ("sky-other" -> "sky"); it includes "background", like the authors' bank.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal, get_args

from pipeline.datasets.specs import PROMPT_NAMES, benchmark_classes
from pipeline.errors import PipelineError

ConceptBank = Literal["authors", "benchmarks"]
BANKS = get_args(ConceptBank)
AUTHORS_BANK = Path(__file__).parent / "concept_banks" / "simzss_authors.txt"

_STUFF_SUFFIXES = ("-other", "-stuff", "-merged")


def prompt_names(benchmark: str) -> tuple[str, ...]:
    """The zero-shot protocol's class names of a benchmark (a dataset or a label view), in
    train-id order, background included where the benchmark has it (see PROMPT_NAMES in specs)."""
    classes = benchmark_classes(benchmark)  # KeyError naming the benchmarks for an unknown one
    names = PROMPT_NAMES.get(benchmark)
    if names is None or len(names) != len(classes):
        raise KeyError(f"benchmark {benchmark!r} has no prompt-name table of its {len(classes)} classes "
                       f"(PROMPT_NAMES in pipeline/datasets/specs.py)")
    return names


def natural_name(name: str) -> str:
    """Class name -> natural words: "sky-other" -> "sky", "wall-brick" -> "wall brick"."""
    name = name.lower()
    for suffix in _STUFF_SUFFIXES:
        name = name.removesuffix(suffix)
    return " ".join(name.replace("-", " ").replace("_", " ").split())


def concept_bank(benchmarks: Iterable[str]) -> tuple[str, ...]:
    """The derived bank: sorted unique natural words of the benchmarks' prompt names; KeyError
    for an unknown benchmark."""
    return tuple(sorted({natural_name(c) for b in benchmarks for c in prompt_names(b)}))


def read_bank(path: str | Path) -> tuple[str, ...]:
    """A bank file, one concept a line, as the authors read it: stripped, lowercased, sorted
    unique, blank lines skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(sorted({line.strip().lower() for line in lines} - {""}))


def load_bank(bank: str, benchmarks: Iterable[str]) -> tuple[str, ...]:
    """The concept bank `concepts.bank` names: 'authors' (the shipped file) or 'benchmarks'
    (derived from `benchmarks`)."""
    if bank == "authors":
        return read_bank(AUTHORS_BANK)
    if bank == "benchmarks":
        return concept_bank(benchmarks)
    raise PipelineError(f"concepts.bank: unknown value {bank!r}; allowed: {list(BANKS)}")

