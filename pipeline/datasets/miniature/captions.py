"""COCO-Captions-like text for the SimZSS text alignment, written from what a canvas shows (and for the toy CLIP's
pretraining, from what a label map shows).

Large classes are mentioned more often than small ones, some visible classes go unmentioned,
and the wording mixes concept-bank words ("car", "traffic light") with words outside the
bank ("man", "street", "photo"), synonyms, plurals, counts and compounds, as people write.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.datasets.miniature.painting import Canvas
from pipeline.datasets.miniature.shapes import THINGS

# Words for each painted class, with weights; mostly benchmark class names.
CAPTION_WORDS = {
    "person": (("person", 3), ("man", 2), ("woman", 2), ("pedestrian", 1)),
    "car": (("car", 6), ("sedan", 1)),
    "bus": (("bus", 4), ("city bus", 1)),
    "truck": (("truck", 4), ("delivery truck", 1)),
    "bicycle": (("bicycle", 3), ("bike", 2)),
    "boat": (("boat", 4), ("sailboat", 1)),
    "cat": (("cat", 4), ("kitten", 1)),
    "bird": (("bird", 5), ("pigeon", 1)),
    "aeroplane": (("airplane", 3), ("aeroplane", 1), ("plane", 2)),
    "chair": (("chair", 1),),
    "table": (("table", 3), ("dining table", 2), ("kitchen table", 1)),
    "pole": (("pole", 1),),
    "traffic sign": (("traffic sign", 2), ("street sign", 2), ("road sign", 1), ("sign", 2)),
    "traffic light": (("traffic light", 4), ("traffic signal", 1)),
    "sky": (("sky", 1),),
    "building": (("building", 4), ("apartment building", 1)),
    "wall": (("wall", 4), ("brick wall", 1)),
    "ceiling": (("ceiling", 1),),
    "floor": (("floor", 1),),
    "road": (("road", 3), ("street", 2)),
    "sidewalk": (("sidewalk", 3), ("pavement", 1)),
    "grass": (("grass", 3), ("lawn", 1)),
    "terrain": (("grass", 2), ("terrain", 1)),
    "tree": (("tree", 4), ("bush", 1)),
    "vegetation": (("tree", 3), ("vegetation", 1), ("bush", 1)),
    "water": (("water", 4), ("pond", 1)),
    "fence": (("fence", 1),),
}
_ADJECTIVES = {
    "person": ("young", "tall"), "car": ("small", "old"), "bus": ("large", "long"),
    "truck": ("large", "big"), "bicycle": ("old",), "boat": ("small", "white"),
    "cat": ("small", "fluffy"), "bird": ("small", "little"), "aeroplane": ("large", "small"),
    "chair": ("wooden", "empty"), "table": ("wooden", "small"), "pole": ("tall",),
    "sky": ("blue", "clear", "bright"), "building": ("tall", "old", "large"),
    "wall": ("plain", "painted"), "ceiling": ("white", "high"), "floor": ("wooden", "tiled"),
    "road": ("paved", "wide"), "grass": ("green",), "tree": ("green", "leafy", "tall"),
    "water": ("calm",), "fence": ("low", "long"),
}
_MASS_NOUNS = {"grass", "water", "vegetation", "terrain", "pavement"}  # 'green grass'
_ONE_ONLY = _MASS_NOUNS | {"sky", "ceiling", "floor", "road", "street"}  # never plural
_GROUPS = {"person": "a group of", "bird": "a flock of", "car": "a row of", "chair": "a set of"}
_QUANTIFIERS = ("some", "several", "a few")
# preposition before each stuff class as a place ("a man standing ON the sidewalk")
_PREPOSITIONS = {
    "sky": ("under",), "building": ("in front of", "next to", "near"),
    "wall": ("in front of", "against", "by"), "ceiling": ("under",), "floor": ("on",),
    "road": ("on", "in"), "sidewalk": ("on", "along"), "grass": ("on", "in"), "terrain": ("on",),
    "tree": ("near", "beside", "under"), "vegetation": ("near", "beside"),
    "water": ("on", "near", "by"), "fence": ("next to", "behind", "along"),
}
# what a thing does at a place: replaces the preposition
_MOTIONS = {
    ("car", "road"): ("driving down", "parked on"), ("bus", "road"): ("driving down", "stopped on"),
    ("truck", "road"): ("driving down", "parked on"), ("person", "road"): ("crossing",),
    ("person", "sidewalk"): ("walking along", "walking on"),
    ("boat", "water"): ("floating on", "sailing on"),
    ("bird", "sky"): ("flying in",), ("aeroplane", "sky"): ("flying in", "flying through"),
    ("cat", "floor"): ("sitting on", "lying on"), ("cat", "grass"): ("sitting in", "lying in"),
    ("bicycle", "sidewalk"): ("parked on",), ("person", "grass"): ("standing on", "sitting on"),
}
_POSES = {"person": ("standing", "sitting"), "car": ("parked",), "bus": ("parked",),
          "truck": ("parked",), "bicycle": ("parked",), "cat": ("sitting",), "bird": ("perched",)}
_ATTACHED = {"traffic light": "pole", "traffic sign": "pole"}  # "a traffic light on a pole"
_SCENE_NOUNS = {
    "street": ("a city street", "a street scene", "an urban scene", "a view of a city street"),
    "outdoor": ("an outdoor scene", "a scene outside", "a scenic view"),
    "indoor": ("a room", "an indoor scene", "a small room", "an interior"),
    "object": ("a photo", "a picture", "an image", "a close up photo"),
}
_PREFIXES = ("a photo of ", "a picture of ", "an image of ", "a close up of ")
_DAYTIME = (" on a sunny day", " during the day", " in the afternoon", " on a clear day")
CAPTIONS_PER_IMAGE = 5
_MIN_PIXELS = 20  # smaller visible parts are not noticed
# area multipliers: objects catch the eye more than stuff, and signals more than their size says
_SALIENCE = {**{name: 8.0 for name in THINGS}, "traffic light": 32.0, "traffic sign": 32.0,
             "fence": 4.0}
_BACKDROPS = ("sky", "building", "wall", "ceiling", "tree", "vegetation", "fence", "water")


@dataclass(frozen=True)
class Seen:
    count: int  # visible instances (layers), at least _MIN_PIXELS each
    area: float  # their share of the image


def seen_classes(c: Canvas) -> dict[str, Seen]:
    """The captionable classes visible on a canvas, largest first."""
    pixels = np.bincount(c.owner.ravel() + 1, minlength=len(c.looks) + 1)[1:]
    counts, areas = {}, {}
    for look, n in zip(c.looks, pixels.tolist()):
        if look in CAPTION_WORDS and n >= _MIN_PIXELS:
            counts[look] = counts.get(look, 0) + 1
            areas[look] = areas.get(look, 0.0) + n / (c.h * c.w)
    return {name: Seen(counts[name], areas[name])
            for name in sorted(areas, key=areas.get, reverse=True)}


def seen_in_labels(labels: np.ndarray, class_names: Sequence[str], ignore_index: int) -> dict[str, Seen]:
    """The captionable classes of a label map, largest first: each connected region of at least _MIN_PIXELS pixels
    (8-connected) is an instance; the area is the class's share of the map. Ignored pixels and classes without
    caption words are left out."""
    ids, pixels = np.unique(labels, return_counts=True)
    seen = {}
    for class_id, n in zip(ids.tolist(), pixels.tolist()):
        name = class_names[class_id] if class_id != ignore_index else None
        if name not in CAPTION_WORDS or n < _MIN_PIXELS:
            continue
        regions = ndimage.label(labels == class_id, structure=np.ones((3, 3)))[0]
        instances = int((np.bincount(regions.ravel())[1:] >= _MIN_PIXELS).sum())
        if instances:
            seen[name] = Seen(instances, n / labels.size)
    return dict(sorted(seen.items(), key=lambda item: item[1].area, reverse=True))


@functools.cache
def _inflect():
    """inflect's engine, imported on first use: the import takes seconds (typeguard)."""
    import inflect
    return inflect.engine()


@functools.cache
def _plural(word: str) -> str:
    return _inflect().plural_noun(word)


@functools.cache
def _a(word: str) -> str:
    return _inflect().a(word)


def _choice(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _pick(seen: dict[str, Seen], names: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """k of `names` without replacement, likelier the larger and the more salient they are."""
    weights = np.array([seen[n].area * _SALIENCE.get(n, 1.0) for n in names]) ** 0.75
    k = min(k, len(names))
    chosen = rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())
    return [names[i] for i in chosen]


def _word(name: str, rng: np.random.Generator) -> str:
    words, weights = zip(*CAPTION_WORDS[name])
    word = words[rng.choice(len(words), p=np.array(weights) / sum(weights))]
    if name in _ADJECTIVES and rng.random() < 0.3:
        return f"{_choice(rng, _ADJECTIVES[name])} {word}"
    return word


def _thing_phrase(name: str, n: int, rng: np.random.Generator) -> tuple[str, bool]:
    """'a wooden chair', 'two cars', 'several people', 'a flock of birds'; and whether plural."""
    word = _word(name, rng)
    if n == 1 or rng.random() < 0.1:
        return _a(word), False
    plural, r = _plural(word), rng.random()
    if name in _GROUPS and n >= 3 and r < 0.3:
        return f"{_GROUPS[name]} {plural}", False
    if r < 0.65:
        return f"{_inflect().number_to_words(n)} {plural}", True
    return f"{_choice(rng, _QUANTIFIERS + (('many',) if n >= 4 else ()))} {plural}", True


def _stuff_phrase(name: str, n: int, rng: np.random.Generator) -> str:
    """'the road', 'a blue sky', 'green grass', 'some buildings'."""
    word = _word(name, rng)
    head = word.split()[-1]
    if head not in _ONE_ONLY and n > 1:
        return f"{_choice(rng, ('some ', 'the ', ''))}{_plural(word)}"
    if head in _MASS_NOUNS and word != head and rng.random() < 0.5:
        return word
    return f"the {word}" if word == head or rng.random() < 0.5 else _a(word)


def _place(subject: str, seen: dict[str, Seen], rng: np.random.Generator) -> str:
    """' parked on the road', ' under a blue sky' for a thing; '' when no stuff is seen."""
    stuff = [n for n in seen if n in _PREPOSITIONS]
    if not stuff:
        return ""
    where = _pick(seen, stuff, 1, rng)[0]
    place = _stuff_phrase(where, seen[where].count, rng)
    if (subject, where) in _MOTIONS and rng.random() < 0.6:
        return f" {_choice(rng, _MOTIONS[subject, where])} {place}"
    pose = f" {_choice(rng, _POSES[subject])}" if subject in _POSES and rng.random() < 0.4 else ""
    return f"{pose} {_choice(rng, _PREPOSITIONS[where])} {place}"


def _mention(name: str, seen: dict[str, Seen], rng: np.random.Generator) -> tuple[str, bool]:
    """A noun phrase for any seen class; things may carry what they hang on."""
    if name not in THINGS:
        return _stuff_phrase(name, seen[name].count, rng), seen[name].count > 1
    text, plural = _thing_phrase(name, seen[name].count, rng)
    support = _ATTACHED.get(name)
    if support in seen and rng.random() < 0.5:
        text += f" on {'poles' if plural else 'a pole'}"
    return text, plural


def _subject_caption(things, seen, scene, rng) -> str:
    """'two cars parked on the road', 'a photo of a cat sitting on the floor'."""
    subject = _pick(seen, things, 1, rng)[0]
    text = _mention(subject, seen, rng)[0]
    if rng.random() < 0.9:
        text += _place(subject, seen, rng)
    if "sky" in seen and rng.random() < 0.15:
        text += _choice(rng, _DAYTIME)
    return (_choice(rng, _PREFIXES) if rng.random() < 0.2 else "") + text


def _pair_caption(things, seen, scene, rng) -> str:
    """'a man and a bicycle on the sidewalk', 'a bus next to two cars'."""
    first, second = _pick(seen, things, 2, rng)
    joint = _choice(rng, (" and ", " and ", " next to ", " near ", " with "))
    text = _mention(first, seen, rng)[0] + joint + _mention(second, seen, rng)[0]
    return text + (_place(second, seen, rng) if rng.random() < 0.5 else "")


def _there_caption(things, seen, scene, rng) -> str:
    """'there are three people standing on the grass'."""
    subject = _pick(seen, things, 1, rng)[0]
    text, plural = _mention(subject, seen, rng)
    return f"there {'are' if plural else 'is'} {text}{_place(subject, seen, rng)}"


def _scene_caption(things, seen, scene, rng) -> str:
    """'a city street with cars, a bus and buildings'."""
    names = _pick(seen, list(seen), int(rng.integers(2, 4)), rng)
    parts = [_mention(n, seen, rng)[0] for n in names]
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"{_choice(rng, _SCENE_NOUNS[scene])} with {listed}"


def _stuff_caption(things, seen, scene, rng) -> str:
    """'tall buildings under a blue sky', 'the road near some trees'."""
    second = _pick(seen, [n for n in seen if n in _BACKDROPS], 1, rng)[0]
    first = _pick(seen, [n for n in seen if n not in (*THINGS, "sky", second)], 1, rng)[0]
    return (f"{_mention(first, seen, rng)[0]} {_choice(rng, _PREPOSITIONS[second])} "
            f"{_stuff_phrase(second, seen[second].count, rng)}")


def _caption(seen: dict[str, Seen], scene: str, rng: np.random.Generator) -> str:
    things = [n for n in seen if n in THINGS]
    forms = [(_scene_caption, 3)]
    if things:
        forms += [(_subject_caption, 4), (_there_caption, 2)]
    if len(things) >= 2:
        forms.append((_pair_caption, 2))
    if any(n in _BACKDROPS for n in seen) and len(set(seen) - set(THINGS) - {"sky"}) >= 2:
        forms.append((_stuff_caption, 1))
    functions, weights = zip(*forms)
    form = functions[rng.choice(len(forms), p=np.array(weights) / sum(weights))]
    text = form(things, seen, scene, rng)
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.8 else "")


def write_caption(seen: dict[str, Seen], scene: str, rng: np.random.Generator) -> str:
    """One caption of the seen classes of a `scene` kind (street | outdoor | indoor | object)."""
    if not seen:
        return f"{_choice(rng, _SCENE_NOUNS[scene]).capitalize()}."
    return _caption(seen, scene, rng)


def write_captions(seen: dict[str, Seen], scene: str, rng: np.random.Generator) -> list[str]:
    """CAPTIONS_PER_IMAGE different captions of the seen classes of a `scene` kind
    (street | outdoor | indoor | object)."""
    if not seen:
        return [write_caption(seen, scene, rng)] * CAPTIONS_PER_IMAGE
    captions: list[str] = []
    for _ in range(10 * CAPTIONS_PER_IMAGE):
        text = _caption(seen, scene, rng)
        if text not in captions:
            captions.append(text)
        if len(captions) == CAPTIONS_PER_IMAGE:
            return captions
    return (captions * CAPTIONS_PER_IMAGE)[:CAPTIONS_PER_IMAGE]

