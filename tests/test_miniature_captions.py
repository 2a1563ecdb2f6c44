"""The miniature's COCO Captions: official layout, read back by list_captions, captions about
what each image shows."""
import io
import json
import re
import zipfile

import inflect
import numpy as np
import pytest
from PIL import Image

from pipeline.datasets.concept_bank import concept_bank
from pipeline.datasets.miniature import generate
from pipeline.datasets.miniature.captions import CAPTION_WORDS
from pipeline.datasets.miniature.coco import captioned_images
from pipeline.datasets.miniature.shapes import THINGS
from pipeline.datasets.readers import list_captions
from tests.test_miniature import _files

SEED = 3
COUNTS = {"coco_captions": {"train": 30, "val": 2}}
BANK = concept_bank(["ade20k", "pascal_voc", "pascal_context", "cityscapes", "coco_stuff",
                     "coco_object"])


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    assert generate(root, SEED, COUNTS) == COUNTS
    return root / "coco_captions"


@pytest.fixture(scope="module")
def annotations(mini):
    with zipfile.ZipFile(mini / "annotations_trainval2017.zip") as zf:
        return {split: json.loads(zf.read(f"annotations/captions_{split}2017.json"))
                for split in ("train", "val")}


@pytest.fixture(scope="module")
def scenes(annotations):
    """Per train image (in id order): its captions as written and the classes with any visible
    pixel on the generator's re-run canvas, with their pixel counts."""
    ids = [image["id"] for image in annotations["train"]["images"]]
    out = []
    for _, c, _, captions in captioned_images(SEED, "train", ids):
        pixels = np.bincount(c.owner.ravel() + 1, minlength=len(c.looks) + 1)[1:]
        visible = {}
        for look, n in zip(c.looks, pixels.tolist()):
            if look is not None and n:
                visible[look] = visible.get(look, 0) + n
        out.append((captions, visible))
    return out


_FORMS = {}  # caption word form -> bank entry ("people" -> "person")
for _entry in BANK:
    _FORMS[_entry] = _FORMS[inflect.engine().plural_noun(_entry)] = _entry


def bank_terms(text: str) -> list[str]:
    """Bank entries in a caption, longest first, left to right, plurals counting."""
    words, found, i = re.findall(r"[a-z]+", text.lower()), [], 0
    while i < len(words):
        for n in (3, 2, 1):
            form = " ".join(words[i:i + n])
            if len(words[i:i + n]) == n and form in _FORMS:
                found.append(_FORMS[form])
                i += n
                break
        else:
            i += 1
    return found


# class -> bank entries its caption words bring ("road sign" -> road, sign)
CLASS_TERMS = {name: {t for word, _ in words for t in bank_terms(word)}
               for name, words in CAPTION_WORDS.items()}


def test_official_layout(mini, annotations):
    assert sorted(_files(mini)) == ["annotations_trainval2017.zip", "train2017.zip", "val2017.zip"]
    ann_ids, image_ids = [], {}
    for split, data in annotations.items():
        assert set(data) == {"info", "licenses", "images", "annotations"}
        with zipfile.ZipFile(mini / f"{split}2017.zip") as zf:
            for image in data["images"]:
                assert image["file_name"] == f"{image['id']:012d}.jpg"
                jpeg = Image.open(io.BytesIO(zf.read(f"{split}2017/{image['file_name']}")))
                assert (jpeg.format, jpeg.size) == ("JPEG", (image["width"], image["height"]))
                assert 96 <= image["height"] <= 200 and 96 <= image["width"] <= 200
            assert len(zf.namelist()) == len(data["images"]) + 1  # + the folder entry
        image_ids[split] = {image["id"] for image in data["images"]}
        assert len(image_ids[split]) == COUNTS["coco_captions"][split]
        per_image = {i: [] for i in image_ids[split]}
        for ann in data["annotations"]:
            assert set(ann) == {"id", "image_id", "caption"}
            per_image[ann["image_id"]].append(ann["caption"])
            ann_ids.append(ann["id"])
        assert all(len(set(captions)) == 5 for captions in per_image.values())
    assert not image_ids["train"] & image_ids["val"]
    assert len(set(ann_ids)) == len(ann_ids)


@pytest.mark.parametrize("split", ["train", "val"])
def test_read_back_by_list_captions(mini, annotations, split):
    refs = list_captions(mini, split)
    expected = {}
    for ann in annotations[split]["annotations"]:
        expected.setdefault(f"{ann['image_id']:012d}", []).append(ann["caption"].strip())
    assert {r.key: list(r.captions) for r in refs} == expected


def test_captions_are_the_generators_and_name_only_visible_classes(annotations, scenes):
    written = {}
    for ann in annotations["train"]["annotations"]:
        written.setdefault(ann["image_id"], []).append(ann["caption"])
    assert [captions for captions, _ in scenes] == list(written.values())
    with_terms = 0
    for captions, visible in scenes:
        allowed = set().union(*(CLASS_TERMS[name] for name in visible if name in CLASS_TERMS))
        for caption in captions:
            terms = bank_terms(caption)
            assert set(terms) <= allowed, (caption, sorted(visible))
            with_terms += bool(terms)
    assert with_terms >= 0.9 * 5 * len(scenes)


def test_wording_varies(scenes):
    text = "\n".join(caption.lower() for captions, _ in scenes for caption in captions)
    assert re.search(r"\b(two|three|four|five|six) \w+s\b", text)  # counts and plurals
    assert re.search(r"\b(several|some|a few|many|a group of|a flock of|a row of) \w+s\b", text)
    assert {t for t in bank_terms(text) if " " in t}  # compounds: traffic light, dining table...
    outside = {"man", "woman", "people", "street", "photo", "picture", "scene", "view"}
    assert len(outside & set(re.findall(r"[a-z]+", text))) >= 4
    assert len(set(text.splitlines())) >= 0.9 * 5 * len(scenes)


def test_large_things_are_mentioned_more_often_than_small_ones(scenes):
    """In images showing several things, more captions name the largest than the smallest;
    and some visible classes go unmentioned."""
    large = small = pairs = unmentioned = 0
    for captions, visible in scenes:
        named = [{name for name, terms in CLASS_TERMS.items() if terms & set(bank_terms(caption))}
                 for caption in captions]
        unmentioned += bool(set(visible) & set(CLASS_TERMS) - set().union(*named))
        things = sorted((n, name) for name, n in visible.items() if name in THINGS)
        if len(things) >= 2:
            pairs += 1
            large += sum(things[-1][1] in names for names in named)
            small += sum(things[0][1] in names for names in named)
    assert pairs >= 10 and unmentioned >= 5
    assert large >= 1.5 * small, (large, small)


def test_deterministic_and_leaves_other_datasets_unchanged(mini, tmp_path):
    generate(tmp_path / "again", SEED, COUNTS)
    assert _files(tmp_path / "again" / "coco_captions") == _files(mini)
    ade = {"ade20k": {"train": 2, "val": 1}}
    generate(tmp_path / "alone", SEED, ade)
    generate(tmp_path / "both", SEED, {**ade, "coco_captions": {"train": 2}})
    assert _files(tmp_path / "alone" / "ade20k") == _files(tmp_path / "both" / "ade20k")
    generate(tmp_path / "other", SEED + 1, {"coco_captions": {"train": 2}})
    assert _files(tmp_path / "other")["coco_captions/train2017.zip"] != \
        _files(tmp_path / "both")["coco_captions/train2017.zip"]


def test_unknown_caption_split(tmp_path):
    expected = r"coco_captions has no split\(s\) \['test'\]; available: \['train', 'val'\]"
    with pytest.raises(ValueError, match=expected):
        generate(tmp_path, SEED, {"coco_captions": {"train": 1, "test": 1}})
    assert not (tmp_path / "coco_captions").exists()
