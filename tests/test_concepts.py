"""Caption concepts: the zero-shot prompt names, the concept banks, the two extraction backends
on hand-annotated spaCy Docs and plain text, and their token positions through open_clip's BPE."""
import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import spacy
import torch
import yaml
from spacy.tokens import Doc

from pipeline.config import parse_params
from pipeline.datasets.bpe_spans import clip_tokenizer, tokenize_caption
from pipeline.datasets.caption_shards import encode_caption
from pipeline.datasets.concept_bank import (AUTHORS_BANK, concept_bank, load_bank, natural_name,
                                            prompt_names, read_bank)
from pipeline.datasets.concepts import Concept, bank_match, concept_extractor, load_spacy, noun_chunks
from pipeline.datasets.specs import (COCO_OBJECT_PROMPT_NAMES, PROMPT_NAMES, SPECS, VIEWS,
                                     benchmark_classes)
from pipeline.errors import ConfigError, PipelineError, SpacyModelError
from pipeline.evaluation import zeroshot_suite
from pipeline.stages import concepts as concepts_stage
from tests.conftest import REPO

VOCAB = spacy.blank("en").vocab


def _doc(annotated: str) -> Doc:
    """A parsed Doc from 'word/POS/dep/head/lemma' items separated by spaces; head is a token
    index; a word ending in '~' is not followed by a space."""
    items = [item.split("/") for item in annotated.split()]
    return Doc(VOCAB, words=[w.rstrip("~") for w, *_ in items],
               spaces=[not w.endswith("~") for w, *_ in items[:-1]] + [False],
               pos=[p for _, p, *_ in items], deps=[d for _, _, d, *_ in items],
               heads=[int(h) for *_, h, _ in items], lemmas=[lem for *_, lem in items])


def _words(text: str, tokens: np.ndarray, positions) -> str:
    """The caption text the BPE pieces at `positions` spell ('</w>' ends a word)."""
    decoder = clip_tokenizer().decoder
    return "".join(decoder[int(tokens[p])] for p in positions).replace("</w>", " ").strip()


# ---------------------------------------------------------------- prompt names and concept banks

# Independent literals of the protocol's lists (wysoczanska/clip_dinoiser segmentation/datasets/
# pascal_voc20.py, PascalVOCDataset20.CLASSES, and pascal_context.py, PascalContextDataset59.CLASSES).
TCL_VOC20 = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa",
    "train", "tvmonitor")
TCL_CONTEXT59 = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate",
    "platform", "potted plant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water",
    "window", "wood")


@pytest.mark.parametrize("name, words", [
    ("sky-other", "sky"), ("wall-brick", "wall brick"), ("traffic light", "traffic light"),
    ("desk-stuff", "desk"), ("tree-merged", "tree"), ("Potted_Plant", "potted plant")])
def test_natural_name(name, words):
    assert natural_name(name) == words


def test_prompt_names_are_the_protocols_lists():
    assert prompt_names("pascal_voc20") == TCL_VOC20
    assert prompt_names("pascal_context59") == TCL_CONTEXT59
    voc = prompt_names("pascal_voc")
    assert voc == ("background", *TCL_VOC20)
    assert (voc[11], voc[16], voc[20]) == ("dining table", "potted plant", "tvmonitor")
    context = prompt_names("pascal_context")
    assert context == ("background", *TCL_CONTEXT59) and context[40] == "potted plant"
    # COCO-Stuff is sent as the dataset names it, suffixes included.
    stuff = prompt_names("coco_stuff")
    assert {"sky-other", "wall-brick", "desk-stuff", "playingfield", "airplane", "tv"} <= set(stuff)
    assert "sky" not in stuff and stuff[4] == "airplane"
    # COCO-Object says 'aeroplane' where COCO-Stuff says 'airplane'.
    obj = prompt_names("coco_object")
    assert obj[:6] == ("background", "person", "bicycle", "car", "motorcycle", "aeroplane")
    assert obj[6:] == stuff[5:80]
    assert prompt_names("ade20k")[7] == "bed" and len(prompt_names("ade20k")) == 150
    assert prompt_names("cityscapes")[6:8] == ("traffic light", "traffic sign")
    # Every benchmark has a table of its classes' length, background first where it has one.
    assert set(PROMPT_NAMES) == set(SPECS) | set(VIEWS)
    for benchmark in PROMPT_NAMES:
        classes, names = benchmark_classes(benchmark), prompt_names(benchmark)
        assert len(names) == len(classes) and (names[0] == "background") == (classes[0] == "background")
    # The datasets' own class tuples (fine-tuning metrics, readers) are unchanged.
    assert benchmark_classes("pascal_voc")[11] == "diningtable"
    assert benchmark_classes("coco_object")[5] == "airplane"
    with pytest.raises(KeyError, match="unknown benchmark 'voc'"):
        prompt_names("voc")


UNKNOWN_BANK = r"concepts.bank: unknown value 'coco'; allowed: \['authors', 'benchmarks'\]"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("benchmark, expected", [
    ("pascal_voc20", TCL_VOC20), ("pascal_voc", TCL_VOC20), ("pascal_context59", TCL_CONTEXT59),
    ("coco_object", tuple(COCO_OBJECT_PROMPT_NAMES[1:]))])
def test_zero_shot_prompts_use_the_protocols_names(monkeypatch, benchmark, expected):
    """evaluate_suite hands the text tower the prompt names, background left out."""
    sent = []

    def class_embeddings(encode, tokenize, names, *args, **kwargs):
        sent.append(tuple(names))
        raise _Stop

    monkeypatch.setattr(zeroshot_suite, "class_embeddings", class_embeddings)
    with pytest.raises(_Stop):
        zeroshot_suite.evaluate_suite(torch.nn.Linear(1, 1), None, SimpleNamespace(benchmarks=[benchmark]),
                                      Path("unused"), "fp32")
    assert sent == [expected]


def test_derived_bank_is_the_natural_words_of_the_prompt_names():
    everything = list(SPECS) + list(VIEWS)
    bank = concept_bank(everything)
    expected = {natural_name(c) for b in everything for c in prompt_names(b)}
    assert bank == tuple(sorted(expected)) and len(set(bank)) == len(bank)
    assert {"background", "sky", "wall brick", "traffic light", "person", "dining table",
            "potted plant", "aeroplane", "airplane"} <= set(bank)
    assert not {"sky-other", "diningtable", "pottedplant"} & set(bank)
    assert concept_bank(["pascal_voc"])[:3] == ("aeroplane", "background", "bicycle")
    # Every derived concept is in the authors' bank.
    assert set(bank) <= set(read_bank(AUTHORS_BANK))
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        concept_bank(["pascal_voc", "nope"])


def test_shipped_authors_bank():
    lines = AUTHORS_BANK.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 574 and lines.count("bed ") == lines.count("bed") == 1  # as the authors ship it
    bank = read_bank(AUTHORS_BANK)
    assert len(bank) == len(set(bank)) == 573 and list(bank) == sorted(bank)
    assert all(entry == entry.strip().lower() and entry for entry in bank)
    assert {"hat", "helmet", "glasses", "egg", "bread", "camera", "wheelchair", "french fries",
            "background", "hot-air balloon", "sky", "wall brick"} <= set(bank)


def test_concepts_bank_param_switches_the_bank(raw_params, monkeypatch):
    benchmarks = raw_params["zeroshot"]["benchmarks"]
    assert load_bank("authors", benchmarks) == read_bank(AUTHORS_BANK)
    assert load_bank("benchmarks", benchmarks) == concept_bank(benchmarks)
    assert load_bank("benchmarks", ["cityscapes"]) == tuple(sorted(prompt_names("cityscapes")))
    with pytest.raises(PipelineError, match=UNKNOWN_BANK):
        load_bank("coco", benchmarks)
    # The concepts stage reads it.
    banks = {}

    def write_caption_shards(root, split, out, bank, extract, **kwargs):
        banks[len(banks)] = bank
        return {"captions": 1, "images": 1, "fraction_with_concept": 1.0, "concepts_per_caption": 1.0}

    monkeypatch.setattr(concepts_stage, "write_caption_shards", write_caption_shards)
    monkeypatch.setattr(concepts_stage, "write_json", lambda *args: None)
    for bank in ("authors", "benchmarks"):
        raw_params["concepts"]["bank"] = bank
        concepts_stage.run(argparse.Namespace(shards=None, task=None, merge=False), parse_params(raw_params))
    assert banks == {0: read_bank(AUTHORS_BANK), 1: concept_bank(benchmarks)}


def test_concepts_bank_is_validated_and_the_paper_uses_the_authors(raw_params):
    raw_params["concepts"]["bank"] = "coco"
    with pytest.raises(ConfigError, match=UNKNOWN_BANK):
        parse_params(raw_params)
    del raw_params["concepts"]["bank"]
    with pytest.raises(ConfigError, match="concepts.bank: missing"):
        parse_params(raw_params)
    paper = yaml.safe_load((REPO / "params-paper.yaml").read_text())
    assert paper["concepts"]["bank"] == "authors"


# ---------------------------------------------------------------- noun_chunks backend

SCENE = _doc("a/DET/det/1/a man/NOUN/nsubj/2/man holding/VERB/ROOT/2/hold two/NUM/nummod/5/two "
             "tennis/NOUN/compound/5/tennis rackets/NOUN/dobj/2/racket near/ADP/prep/2/near "
             "a/DET/det/10/a red/ADJ/amod/10/red fire/NOUN/compound/10/fire "
             "hydrant~/NOUN/pobj/6/hydrant ./PUNCT/punct/2/.")
BANK = ("dog", "fire hydrant", "tennis racket", "ball")


def test_noun_chunks_compound_plus_root_lemma_and_bank_filter():
    assert SCENE.text == "a man holding two tennis rackets near a red fire hydrant."
    concepts = noun_chunks(SCENE, frozenset(BANK))
    # "a man" is a noun chunk whose concept is not in the bank: dropped.
    assert [c.name for c in concepts] == ["tennis racket", "fire hydrant"]
    # Spans are the surface compound and root tokens, not the lemma.
    assert [[SCENE.text[s:e] for s, e in c.char_spans] for c in concepts] == [
        ["tennis", "rackets"], ["fire", "hydrant"]]


def test_noun_chunks_plural_root_and_last_compound_only():
    doc = _doc("two/NUM/nummod/1/two dogs/NOUN/nsubj/2/dog chase/VERB/ROOT/2/chase "
               "a/DET/det/6/a brick/NOUN/compound/6/brick fire/NOUN/compound/6/fire "
               "hydrant/NOUN/dobj/2/hydrant")
    concepts = noun_chunks(doc, set(BANK))
    assert [(c.name, [doc.text[s:e] for s, e in c.char_spans]) for c in concepts] == [
        ("dog", ["dogs"]), ("fire hydrant", ["fire", "hydrant"])]
    assert noun_chunks(doc, {"brick fire hydrant", "hydrant"}) == []


def test_noun_chunks_spans_exact_through_bpe():
    caption = tokenize_caption("A man holding two Tennis rackets near a red  fire hydrant.")
    assert caption.text == SCENE.text
    hydrant = noun_chunks(SCENE, BANK)[1]
    positions = caption.positions(hydrant.char_spans)
    pieces = [clip_tokenizer().decoder[int(caption.tokens[p])] for p in positions]
    assert pieces == ["fire</w>", "hydr", "ant</w>"]  # 'hydrant' is two BPE pieces
    assert positions.tolist() == [11, 12, 13]
    assert _words(caption.text, caption.tokens, caption.positions(noun_chunks(SCENE, BANK)[0]
                                                                  .char_spans)) == "tennis rackets"


def test_noun_chunks_needs_a_parse():
    with pytest.raises(SpacyModelError, match="dependency parse"):
        noun_chunks(Doc(VOCAB, words=["a", "dog"]), BANK)


def test_missing_spacy_pipeline_says_how_to_install_it():
    with pytest.raises(SpacyModelError) as err:
        load_spacy("en_core_web_zz")
    message = str(err.value)
    assert "python -m spacy download en_core_web_zz" in message
    assert ("pip install https://github.com/explosion/spacy-models/releases/download/"
            "en_core_web_zz-3.8.0/en_core_web_zz-3.8.0-py3-none-any.whl") in message
    assert "bank_match" in message


def test_extractor_backends(tmp_path):
    extract = concept_extractor("bank_match", BANK, "unused")
    assert [[c.name for c in cs] for cs in extract(["two dogs", "a man"])] == [["dog"], []]
    spacy.blank("en").to_disk(tmp_path / "blank")  # a pipeline without a parser
    with pytest.raises(SpacyModelError, match="dependency parse"):
        concept_extractor("noun_chunks", BANK, str(tmp_path / "blank"))(["two dogs"])
    with pytest.raises(PipelineError, match="unknown concepts backend 'nouns'"):
        concept_extractor("nouns", BANK, "unused")


# ---------------------------------------------------------------- bank_match backend

def _matches(text: str, bank: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(c.name, text[c.char_spans[0][0]:c.char_spans[0][1]]) for c in bank_match(text, bank)]


def test_bank_match_plurals():
    text = "two buses, three people and some mice near a bench"
    assert _matches(text, ("bench", "bus", "mouse", "person")) == [
        ("bus", "buses"), ("person", "people"), ("mouse", "mice"), ("bench", "bench")]


def test_bank_match_longest_without_overlaps():
    bank = ("light", "plant", "plant pot", "pot", "potted plant", "traffic", "traffic light")
    assert _matches("a traffic light by the traffic lights and a light", bank) == [
        ("traffic light", "traffic light"), ("traffic light", "traffic lights"),
        ("light", "light")]
    # Left to right: "potted plant" is taken, so "plant pot" cannot reuse "plant".
    assert _matches("a potted plant pot", bank) == [("potted plant", "potted plant"),
                                                   ("pot", "pot")]


def test_bank_match_is_surface_words_plus_plurals_not_lemmas():
    """No lemmatiser: only an entry as written or its inflect plural matches, so a verb form
    ("running") or a capitalised word's lemma is not mapped back, and params.yaml says so."""
    assert _matches("Dogs running past a run of leaves", ("dog", "run", "leaf")) == [
        ("dog", "Dogs"), ("run", "run"), ("leaf", "leaves")]
    assert _matches("a man runs and ran", ("run",)) == [("run", "runs")]  # "runs": plural of "run"
    comment = (REPO / "params.yaml").read_text().split("# bank_match (", 1)[1].split("spacy_model:")[0]
    assert "lemmatised" not in comment and "as written" in comment and "plural" in comment


def test_bank_match_hyphenated_word_and_entries_over_plurals():
    assert _matches("a hot-dog stand", ("dog", "hot dog")) == [("hot dog", "hot-dog")]
    # "glasses" is the plural of "glass" and an entry itself: the entry wins.
    assert _matches("wine glasses and a glass", ("glass", "glasses")) == [
        ("glasses", "glasses"), ("glass", "glass")]


# ---------------------------------------------------------------- token positions

@pytest.mark.parametrize("raw", [
    "A  Red fire-hydrant's cap, 2x4 &amp; t-shirts!", "Ünïcödé café — naïve résumé",
    "", " ".join(["elephant"] * 90), "a    b\tc\n"])
def test_tokens_are_open_clips(raw):
    caption = tokenize_caption(raw)
    assert caption.tokens.dtype == np.int32
    np.testing.assert_array_equal(caption.tokens, open_clip.tokenize(raw)[0].numpy())
    assert caption.text == clip_tokenizer().clean_fn(raw)
    assert caption.kept == min(len(clip_tokenizer().encode(raw)), 75)


def test_positions_of_split_and_hyphenated_words():
    caption = tokenize_caption("a red t-shirt near the hydrant")
    text = caption.text
    tshirt = (text.index("t-shirt"), text.index("t-shirt") + len("t-shirt"))
    assert caption.positions([tshirt]).tolist() == [3, 4, 5]  # 't', '-', 'shirt'
    assert _words(text, caption.tokens, caption.positions([tshirt])) == "t - shirt"
    # A span inside one word still takes all of that word's pieces.
    start = text.index("hydrant")
    positions = caption.positions([(start + 1, start + 2)])
    assert _words(text, caption.tokens, positions).replace(" ", "") == "hydrant"
    assert len(positions) == 2
    assert caption.positions([(1, 2)]).size == 0  # a space has no token


BANK_IDS = {"cat": 0, "dog": 1}


def _concept(text: str, word: str, start: int = 0) -> Concept:
    i = text.index(word, start)
    return Concept(word, ((i, i + len(word)),))


def test_truncation_drops_only_the_concepts_past_the_end():
    # 'dog', 73 x 'the', 'cat', 'cat': the first 'cat' is the 75th piece, the last kept.
    caption = tokenize_caption("dog " + "the " * 73 + "cat cat")
    assert caption.kept == 75 and caption.tokens[76] == clip_tokenizer().eot_token_id
    first_cat = _concept(caption.text, "cat")
    last_cat = _concept(caption.text, "cat", first_cat.char_spans[0][1])
    encoded = encode_caption(caption, [_concept(caption.text, "dog"), first_cat, last_cat],
                             BANK_IDS, 32, 16)
    assert encoded.concepts[:3].tolist() == [1, 0, -1]
    assert encoded.spans[:2, :2].tolist() == [[1, 0], [75, 0]]
    assert encoded.names == ("dog", "cat") and encoded.dropped == {"truncated": 1}


def test_at_most_max_concepts_each_under_max_tokens():
    caption = tokenize_caption(" ".join(["dog"] * 40))
    concepts = [Concept("dog", ((4 * i, 4 * i + 3),)) for i in range(40)]
    encoded = encode_caption(caption, concepts, BANK_IDS, 32, 16)
    assert encoded.concepts.shape == (32,) and (encoded.concepts == 1).all()
    assert encoded.spans.shape == (32, 16)
    np.testing.assert_array_equal(encoded.spans[:, 0], np.arange(1, 33))
    assert (encoded.spans[:, 1:] == 0).all() and encoded.dropped == {"over_max": 8}
    # A concept of 15 tokens fits, one of 16 does not.
    fifteen, sixteen = Concept("cat", ((0, 4 * 15 - 1),)), Concept("cat", ((0, 4 * 16 - 1),))
    encoded = encode_caption(caption, [sixteen, fifteen], BANK_IDS, 32, 16)
    assert encoded.concepts[:2].tolist() == [0, -1] and encoded.dropped == {"too_long": 1}
    np.testing.assert_array_equal(encoded.spans[0], [*range(1, 16), 0])
