"""The toy pretrainings of `clip` and `dino` (pipeline.training.toy_objectives), and what every toy shares: one
objective per trained family, deterministic runs and native-shape weights that finetune loads strictly."""
import hashlib
import math
import re

import numpy as np
import pytest
import torch
import webdataset as wds

from pipeline.config import ClipCfg, DinoCfg, PretrainCfg, Variant
from pipeline.datasets.miniature.captions import CAPTION_WORDS, seen_in_labels
from pipeline.datasets.miniature.formats import encode_png
from pipeline.datasets.specs import get_spec
from pipeline.networks.encoder import create_native_model
from pipeline.networks.weights import load_strict
from pipeline.training.choices import TOY_PRETRAININGS
from pipeline.training.pretrain import OBJECTIVES, build_toy, pretrain_toy
from pipeline.training.toy_objectives.clip import ClipObjective, label_captions
from pipeline.training.toy_objectives.dino import DinoObjective, cls_token, dino_loss

TINY = Variant(timm_name="vit_small_patch16_224", timm_kwargs={"img_size": 32, "embed_dim": 32, "depth": 1,
                                                               "num_heads": 2})
CLIP = ClipCfg(embed_dim=8, text_width=16, text_layers=1, text_heads=2)
DINO = DinoCfg(out_dim=16, hidden_dim=16, bottleneck_dim=8, global_scale=(0.4, 1.0), local_crops=2, local_size=16,
               local_scale=(0.05, 0.4), student_temp=0.1, teacher_temp=0.04, center_momentum=0.9,
               teacher_momentum=0.9)
NAMES = ("wall", "sky", "car", "bed", "person")  # "bed" has no caption words
WALL, SKY, CAR, BED, PERSON, IGNORE = 0, 1, 2, 3, 4, 255


def scene_labels() -> np.ndarray:
    """32 x 32: sky above a wall, two separate cars (30 px each), a bed, a 12-pixel person, an ignored patch."""
    labels = np.full((32, 32), WALL, np.uint8)
    labels[:8] = SKY
    labels[20:25, 2:8] = CAR
    labels[20:25, 20:26] = CAR
    labels[10:14, 10:16] = BED
    labels[28:31, 28:32] = PERSON
    labels[14:18, 0:4] = IGNORE
    return labels


def toy_cfg(steps: int = 2) -> PretrainCfg:
    return PretrainCfg(dataset="ade20k", steps=steps, batch_size=2, lr=1e-3, weight_decay=0.05, mask_ratio=0.5,
                       presence_cell=16, workers=0, seed=0, clip=CLIP, dino=DINO)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    """One shard of four 40 x 40 ADE20K-like samples: sky, building, road and a car."""
    path = tmp_path_factory.mktemp("shards") / "train-000000.tar"
    rng = np.random.default_rng(0)
    classes = get_spec("ade20k").classes
    with wds.TarWriter(str(path)) as writer:
        for i in range(4):
            label = np.full((40, 40), classes.index("building"), np.uint8)
            label[: 8 + 2 * i] = classes.index("sky")
            label[30:] = classes.index("road")
            label[24:34, 4 * i:4 * i + 12] = classes.index("car")
            image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            writer.write({"__key__": f"s{i}", "png": encode_png(image), "label.png": encode_png(label)})
    return [str(path)]


# ---------------------------------------------------------------- captions from label maps

def test_seen_classes_of_a_label_map_leave_out_ignored_small_and_wordless_ones():
    seen = seen_in_labels(scene_labels(), NAMES, IGNORE)
    assert list(seen) == ["wall", "sky", "car"]  # largest first; no bed (no words), person (12 px), ignore
    assert seen["car"].count == 2 and seen["sky"].count == 1 and seen["wall"].count == 1
    assert seen["car"].area == 60 / 1024 and seen["sky"].area == 256 / 1024


def test_label_captions_name_only_what_the_crop_shows():
    rng = np.random.default_rng(0)
    captions = label_captions(np.stack([scene_labels()] * 40), NAMES, IGNORE, rng)
    text = " ".join(captions).lower()
    assert not re.search(r"\b(person|people|man|men|woman|women|pedestrians?|bed)\b", text)
    shown = {name for name in ("wall", "sky", "car")
             if any(re.search(rf"\b{word.split()[-1]}s?\b", text) for word, _ in CAPTION_WORDS[name])}
    assert shown == {"wall", "sky", "car"}
    indoor = label_captions(np.full((1, 8, 8), BED, np.uint8), NAMES, IGNORE, np.random.default_rng(0))
    assert indoor[0] in {"A room.", "An indoor scene.", "A small room.", "An interior."}


# ---------------------------------------------------------------- clip

def clip_objective() -> ClipObjective:
    torch.manual_seed(0)
    return ClipObjective(build_toy(TINY, "timm"), CLIP, NAMES, IGNORE)


def test_clip_loss_is_infonce_on_the_objectives_features():
    objective = clip_objective()
    images, labels = torch.rand(3, 3, 32, 32), torch.from_numpy(np.stack([scene_labels()] * 3)).long()
    labels[1, :8] = WALL  # no sky: indoor
    loss = objective(images, labels, torch.Generator().manual_seed(5))
    image, text = objective.features(images, objective.captions(labels, torch.Generator().manual_seed(5)))
    assert math.exp(objective.text.logit_scale.item()) == pytest.approx(1 / 0.07)
    logits = (image @ text.T).double() / 0.07
    diagonal = logits.diagonal()
    expected = ((logits.logsumexp(1) - diagonal).mean() + (logits.logsumexp(0) - diagonal).mean()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_clip_steps_reduce_the_loss_and_clamp_the_temperature():
    objective = clip_objective()
    images, labels = torch.rand(4, 3, 32, 32), torch.from_numpy(np.stack([scene_labels()] * 4)).long()
    labels[2:, :8] = WALL
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    losses = []
    for step in range(1, 9):
        loss = objective(images, labels, torch.Generator().manual_seed(0))  # the same captions every step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        objective.after_step(step)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    with torch.no_grad():
        objective.text.logit_scale.fill_(math.log(500))
    objective.after_step(9)
    assert math.exp(objective.text.logit_scale.item()) == pytest.approx(100)


# ---------------------------------------------------------------- dino

def dino_objective(steps: int = 10) -> DinoObjective:
    torch.manual_seed(0)
    return DinoObjective(build_toy(TINY, "timm"), DINO, steps)


def test_dino_loss_pairs_each_teacher_view_with_every_other_student_view():
    student = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[0.5, -0.5]])]
    teacher = [torch.tensor([[0.2, 0.0]]), torch.tensor([[0.0, 0.1]])]
    center = torch.tensor([[0.05, 0.0]])

    def softmax(logits, temp):
        e = [math.exp(x / temp) for x in logits]
        return [x / sum(e) for x in e]

    targets = [softmax([t - c for t, c in zip(view[0].tolist(), center[0].tolist())], 0.04) for view in teacher]
    predictions = [softmax(view[0].tolist(), 0.1) for view in student]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # not (0, 0) nor (1, 1): a view never predicts itself
    expected = sum(-sum(p * math.log(q) for p, q in zip(targets[i], predictions[v])) for i, v in pairs) / 4
    assert dino_loss(student, teacher, center, 0.1, 0.04).item() == pytest.approx(expected, rel=1e-5)


def test_dino_center_and_teacher_follow_their_moving_averages():
    objective = dino_objective(steps=10)
    with torch.no_grad():
        for p in [*objective.encoder.parameters(), *objective.head.parameters()]:
            p.add_(torch.randn_like(p))
    student = [p.clone() for p in [*objective.encoder.parameters(), *objective.head.parameters()]]
    teacher = [p.clone() for p in [*objective.teacher.parameters(), *objective.teacher_head.parameters()]]
    objective.after_step(1)
    m = 0.9  # the first step's momentum
    after = [*objective.teacher.parameters(), *objective.teacher_head.parameters()]
    assert all(torch.allclose(a, m * t + (1 - m) * s) for a, t, s in zip(after, teacher, student, strict=True))
    assert objective.teacher_momentum(6) == pytest.approx(1 - 0.1 / 2)  # halfway along the cosine

    logits = torch.randn(6, DINO.out_dim)
    objective.update_center(logits)
    first = 0.1 * logits.mean(0, keepdim=True)
    objective.update_center(2 * logits)
    torch.testing.assert_close(objective.center, 0.9 * first + 0.1 * 2 * logits.mean(0, keepdim=True))


def test_dino_views_run_through_the_same_network_at_both_sizes():
    objective = dino_objective()
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(cls_token(objective.encoder, images), objective.encoder.tokens(images)[0])
    global_views, local_views = objective.views(images, torch.Generator().manual_seed(0))
    assert [v.shape for v in global_views] == [(3, 3, 32, 32)] * 2
    assert [v.shape for v in local_views] == [(3, 3, 16, 16)] * DINO.local_crops
    again = objective.views(images, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(global_views + local_views, again[0] + again[1]))


def test_dino_trains_the_student_and_releases_the_teacher():
    objective = dino_objective()
    teacher_before = {k: v.clone() for k, v in objective.teacher.model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-2)
    loss = objective(torch.rand(4, 3, 32, 32), None, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in objective.teacher.parameters())
    optimizer.step()
    objective.after_step(1)
    released = objective.released_weights()
    assert released.keys() == teacher_before.keys()
    assert all(torch.equal(released[k], v) for k, v in objective.teacher.model.state_dict().items())
    student = objective.encoder.model.state_dict()
    assert not torch.equal(released["pos_embed"], student["pos_embed"])
    assert not torch.equal(released["pos_embed"], teacher_before["pos_embed"])


# ---------------------------------------------------------------- every toy

def test_every_trained_toy_pretraining_has_one_objective():
    assert set(OBJECTIVES) == set(TOY_PRETRAININGS) - {"random"}


@pytest.mark.parametrize("method", ["clip", "dino"])
def test_toy_pretraining_is_deterministic_and_loads_strictly_in_native_shapes(shards, method):
    def digest(state):
        return hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()

    runs = [pretrain_toy(method, TINY, "timm", shards, toy_cfg(), get_spec("ade20k")) for _ in range(2)]
    assert digest(runs[0]) == digest(runs[1])
    initial = build_toy(TINY, "timm").model.state_dict()
    assert digest(runs[0]) != digest(initial)
    model = create_native_model(TINY.timm_name, False, TINY.timm_kwargs)
    load_strict(model, runs[0], source=method)
    assert all(runs[0][k].shape == v.shape for k, v in model.state_dict().items())


def test_a_non_finite_loss_stops_the_toy_pretraining(shards, monkeypatch):
    from pipeline.errors import NonFiniteLossError

    monkeypatch.setattr(DinoObjective, "forward", lambda self, *args: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"optimizer step 1 of toy pretraining \(dino\)"):
        pretrain_toy("dino", TINY, "timm", shards, toy_cfg(), get_spec("ade20k"))
