"""The miniature ADE20K: ADEChallengeData2016.zip."""
from __future__ import annotations

from pathlib import Path

from pipeline.datasets.miniature.formats import encode_jpeg, encode_png, write_zip
from pipeline.datasets.miniature.painting import PHOTO, Canvas
from pipeline.datasets.miniature.scenes import ade_scene
from pipeline.datasets.miniature.seeds import image_rng
from pipeline.datasets.specs import ADE20K_CLASSES


def _ade_label(name: str) -> int:
    return 0 if name == "other" else ADE20K_CLASSES.index(name) + 1


def write_ade20k(out: Path, seed: int, counts: dict[str, int]) -> None:
    files = {}
    for split, sub in (("train", "training"), ("val", "validation")):
        for i in range(counts.get(split, 0)):
            rng = image_rng(seed, "ade20k", split, i)
            c = Canvas(int(rng.integers(96, 161)), int(rng.integers(128, 201)), rng, _ade_label)
            ade_scene(c, PHOTO)
            name = f"ADE_{split}_{i + 1:08d}"
            files[f"ADEChallengeData2016/images/{sub}/{name}.jpg"] = encode_jpeg(c.finish(PHOTO))
            files[f"ADEChallengeData2016/annotations/{sub}/{name}.png"] = encode_png(c.label)
    write_zip(out / "ADEChallengeData2016.zip", files)
