"""Concepts of a caption: bank entries found in the cleaned caption, with their character spans.

Two backends:
- `noun_chunks` (the paper's): a trained spaCy pipeline parses the caption; each noun chunk
  gives the concept "<last compound child of the root> <root lemma>" (e.g. "two tennis
  rackets" -> "tennis racket"), kept only if it is in the bank. Its spans are the surface
  compound and root tokens, as in the authors' code.
- `bank_match` (needs no trained pipeline): the longest bank entries found, left to right
  without overlaps, in the caption's tokens, a plural entry form counting as the entry.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Container, get_args

import inflect
import spacy
from spacy.tokens import Doc

from pipeline.datasets.choices import ConceptBackend
from pipeline.errors import PipelineError, SpacyModelError

BACKENDS = get_args(ConceptBackend)


@dataclass(frozen=True)
class Concept:
    """A bank entry found in a cleaned caption: its name and the (start, end) character
    spans of the caption words it was found in."""
    name: str
    char_spans: tuple[tuple[int, int], ...]


def noun_chunks(doc: Doc, bank: Container[str]) -> list[Concept]:
    """Concepts of a parsed caption, one per noun chunk whose concept is in `bank`."""
    if not doc.has_annotation("DEP"):
        raise SpacyModelError(f"noun chunks need a dependency parse; the spaCy pipeline gave "
                              f"none for {doc.text!r} (use a trained pipeline with a parser)")
    concepts = []
    for chunk in doc.noun_chunks:
        root = chunk.root
        words = [child for child in root.children if child.dep_ == "compound"][-1:] + [root]
        name = " ".join([w.text.lower() for w in words[:-1]] + [root.lemma_.lower()])
        if name in bank:
            concepts.append(Concept(name, tuple((w.idx, w.idx + len(w)) for w in words)))
    return concepts


@functools.cache
def _tokenizer():
    return spacy.blank("en").tokenizer


def _words(text: str) -> list[tuple[str, int, int]]:
    """(lowercased word, start, end) of the tokens of `text`; a hyphen inside a word
    ("hot-dog") is dropped so the word matches the entry "hot dog"."""
    tokens = _tokenizer()(text)
    return [(t.lower_, t.idx, t.idx + len(t)) for t in tokens
            if not (t.text == "-" and t.i > 0 and not t.whitespace_
                    and not tokens[t.i - 1].whitespace_)]


@functools.lru_cache(maxsize=8)
def _surface_forms(bank: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    """Word sequence -> bank entry, for every entry and its plural ("buses" -> "bus",
    "people" -> "person", "traffic lights" -> "traffic light"); an entry itself wins over
    another entry's plural."""
    engine = inflect.engine()
    forms = {}
    for entry in bank:
        forms[tuple(w for w, _, _ in _words(engine.plural_noun(entry)))] = entry
    for entry in bank:
        forms[tuple(w for w, _, _ in _words(entry))] = entry
    return forms


def bank_match(text: str, bank: tuple[str, ...]) -> list[Concept]:
    """Greedy left-to-right longest matches of bank entries (or their plurals) in `text`."""
    forms = _surface_forms(bank)
    longest = max(map(len, forms), default=0)
    words, concepts, i = _words(text), [], 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            entry = forms.get(tuple(w for w, _, _ in words[i:i + n]))
            if entry is not None:
                concepts.append(Concept(entry, ((words[i][1], words[i + n - 1][2]),)))
                i += n
                break
        else:
            i += 1
    return concepts


def _wheel_url(name: str) -> str:
    version = ".".join(spacy.about.__version__.split(".")[:2]) + ".0"
    return (f"https://github.com/explosion/spacy-models/releases/download/"
            f"{name}-{version}/{name}-{version}-py3-none-any.whl")


def load_spacy(name: str) -> spacy.language.Language:
    """The installed spaCy pipeline `name`; if missing, an error that says how to install it."""
    try:
        return spacy.load(name)
    except OSError as err:
        raise SpacyModelError(
            f"spaCy pipeline {name!r} (params concepts.spacy_model) is not installed ({err}). "
            f"Install it with `python -m spacy download {name}` or `pip install {_wheel_url(name)}`, "
            f"or use concepts.backend: bank_match, which needs no trained pipeline") from err


Extractor = Callable[[list[str]], list[list[Concept]]]


def concept_extractor(backend: str, bank: tuple[str, ...], spacy_model: str,
                      batch_size: int = 256) -> Extractor:
    """A function from cleaned captions to their concepts, with the chosen backend."""
    if backend == "bank_match":
        def extract(texts: list[str]) -> list[list[Concept]]:
            return [bank_match(text, bank) for text in texts]
    elif backend == "noun_chunks":
        nlp, names = load_spacy(spacy_model), frozenset(bank)

        def extract(texts: list[str]) -> list[list[Concept]]:
            return [noun_chunks(doc, names) for doc in nlp.pipe(texts, batch_size=batch_size)]
    else:
        raise PipelineError(f"unknown concepts backend {backend!r}; expected one of {BACKENDS}")
    return extract
