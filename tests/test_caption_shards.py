"""The concepts stage's shards, written from a tiny COCO captions layout and read back."""
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import webdataset as wds

from pipeline.datasets.bpe_spans import clip_tokenizer
from pipeline.datasets.caption_shards import (caption_shard_paths, decode_caption_sample,
                                              read_manifest, write_caption_shards)
from pipeline.datasets.concepts import concept_extractor
from pipeline.datasets.miniature.formats import encode_jpeg, write_zip
from pipeline.errors import DataError

GREEN, BLUE = (0, 200, 0), (0, 0, 200)
BANK = ("bus", "fire hydrant", "person", "room", "traffic light")
LONG = "a bus " + "and then " * 40 + "a person"  # 'person' is past the 77 tokens
CAPTIONS = {  # image id -> captions, in annotation-id order
    139: ["A red fire-hydrant next to two Traffic Lights.", "Two people riding buses."],
    285: ["An empty room.", "Nothing to see here", LONG],
}
SIZE = 8


def _key(image_id: int) -> str:
    return f"{image_id:012d}"


def _image(width: int, height: int) -> np.ndarray:
    """Blue, with a green square of side `height` in the middle (the centre crop)."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = BLUE
    left = (width - height) // 2
    rgb[:, left:left + height] = GREEN
    return rgb


def _coco(root: Path, corrupt: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    images = {f"train2017/{_key(i)}.jpg": encode_jpeg(_image(40 + 20 * k, 24), quality=95)
              for k, i in enumerate(CAPTIONS)}
    if corrupt:
        images[f"train2017/{_key(285)}.jpg"] = b"not a jpeg"
    entries = [{"id": i, "file_name": f"{_key(i)}.jpg", "height": 24, "width": 40 + 20 * k}
               for k, i in enumerate(CAPTIONS)]
    anns = [{"id": 10 * i + j, "image_id": i, "caption": c}
            for i, caps in CAPTIONS.items() for j, c in enumerate(caps)]
    write_zip(root / "train2017.zip", images)
    write_zip(root / "annotations_trainval2017.zip", {"annotations/captions_train2017.json":
                                                      json.dumps({"images": entries,
                                                                  "annotations": anns}).encode()})


def _write(root: Path, out: Path, workers: int = 1) -> dict:
    return write_caption_shards(root, "train", out, BANK, concept_extractor("bank_match", BANK, ""),
                                image_size=SIZE, shard_size=2, workers=workers)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    _coco(root / "src")
    stats = _write(root / "src", root / "out")
    samples = list(wds.WebDataset(caption_shard_paths(root / "out").paths, shardshuffle=False,
                                  nodesplitter=None, workersplitter=None, empty_check=False))
    return root, stats, samples


def test_manifest_and_stats(written):
    root, stats, _ = written
    assert sorted(p.name for p in (root / "out").iterdir()) == [
        "manifest.json", "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    manifest = read_manifest(root / "out")
    assert manifest["split"] == {"name": "train", "samples": 5, "images": 2, "shards": [
        "train-000000.tar", "train-000001.tar", "train-000002.tar"]}
    assert manifest["bank"] == list(BANK) and manifest["context_length"] == 77
    assert (manifest["max_concepts"], manifest["max_concept_tokens"]) == (32, 16)
    assert manifest["concept_counts"] == {"fire hydrant": 1, "traffic light": 1, "person": 1,
                                          "bus": 2, "room": 1}
    assert stats == {"captions": 5, "images": 2, "captions_with_concept": 4,
                     "fraction_with_concept": 0.8, "concepts": 6, "concepts_per_caption": 1.2,
                     "distinct_concepts": 5, "concepts_dropped_truncated": 1,
                     "concepts_dropped_too_long": 0, "concepts_dropped_over_max": 0}


def test_samples_roundtrip(written):
    _, _, samples = written
    raw = [c for caps in CAPTIONS.values() for c in caps]
    assert [s["__key__"] for s in samples] == [
        f"{_key(i)}_{j}" for i, caps in CAPTIONS.items() for j in range(len(caps))]
    assert [s["txt"].decode() for s in samples] == raw
    expected = [["fire hydrant", "traffic light"], ["person", "bus"], ["room"], [], ["bus"]]
    spelled = [["fire - hydrant", "traffic lights"], ["people", "buses"], ["room"], [], ["bus"]]
    decoder = clip_tokenizer().decoder
    for sample, caption, names, words in zip(samples, raw, expected, spelled):
        decoded = decode_caption_sample(sample)
        meta = json.loads(sample["json"])
        assert meta == {"image": decoded.image_key, "concepts": names}
        assert decoded.key == sample["__key__"] and decoded.key.startswith(decoded.image_key)
        assert {t.dtype for t in (decoded.tokens, decoded.concepts, decoded.spans)} == {torch.int64}
        assert decoded.tokens.tolist() == open_clip.tokenize(caption)[0].tolist()
        assert decoded.concepts.shape == (32,) and decoded.spans.shape == (32, 16)
        assert [BANK[i] for i in decoded.concepts[:len(names)]] == names
        assert (decoded.concepts[len(names):] == -1).all() and (decoded.spans[len(names):] == 0).all()
        assert words == ["".join(decoder[int(decoded.tokens[p])] for p in row[row > 0])
                         .replace("</w>", " ").strip() for row in decoded.spans[:len(names)]]


def test_images_are_square_centre_crops(written):
    _, _, samples = written
    for sample in samples:
        image = decode_caption_sample(sample).image
        assert image.shape == (3, SIZE, SIZE)
        mean = image.float().mean(dim=(1, 2))
        assert mean[1] > 180 and mean[0] < 20 and mean[2] < 20  # only the green centre is kept
    first, second = samples[0], samples[1]
    assert first["jpg"] == second["jpg"]  # one image, encoded once, for all its captions


def test_workers_give_identical_shards(written, tmp_path):
    root, _, _ = written
    _write(root / "src", tmp_path / "out", workers=2)
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar", "manifest.json"):
        assert (tmp_path / "out" / name).read_bytes() == (root / "out" / name).read_bytes()


def test_failure_keeps_the_previous_output(written, tmp_path):
    root, _, _ = written
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("kept")
    _coco(tmp_path / "src", corrupt=True)
    with pytest.raises(DataError, match=f"train2017/{_key(285)}.jpg: cannot decode image"):
        _write(tmp_path / "src", out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (out / "old").read_text() == "kept"


def test_decode_rejects_an_incomplete_sample(written):
    _, _, samples = written
    sample = {k: v for k, v in samples[0].items() if k != "spans.npy"}
    with pytest.raises(DataError, match=r"lacks \['spans.npy'\]"):
        decode_caption_sample(sample)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="missing or unreadable"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"split": {}}')
    with pytest.raises(DataError, match="corrupt manifest"):
        read_manifest(tmp_path)


def test_a_damaged_shard_is_refused_naming_the_stage_that_rewrites_it(written, tmp_path):
    root, _, _ = written
    out = tmp_path / "out"
    out.mkdir()
    for path in (root / "out").iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    shard = out / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x01")
    with pytest.raises(DataError, match=rf"^{shard}: sha256 differs from the one {out / 'manifest.json'} recorded "
                                        r"\(truncated or modified since concepts wrote it\); re-run: "
                                        r"dvc repro -f -s concepts$"):
        caption_shard_paths(out)
