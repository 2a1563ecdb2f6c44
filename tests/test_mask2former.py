import itertools
import math

import pytest
import torch

from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.networks import mask2former
from pipeline.networks.mask2former import (
    Mask2FormerDecoder,
    MaskedAttentionBlock,
    MaskPrediction,
    attention_mask,
    sine_position_encoding,
)
from pipeline.training import mask_classification
from pipeline.training.mask_classification import (
    HungarianMatcher,
    Mask2FormerLoss,
    MaskTarget,
    point_sample,
    targets_from_labels,
    uncertainty_points,
)

TINY = dict(hidden_dim=16, num_queries=5, num_heads=2, ffn_dim=32)


def bilinear(image: torch.Tensor, x: float, y: float) -> float:
    """`image` (H x W) at normalised (x, y), like grid_sample(align_corners=False) with zero padding."""
    height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    total = 0.0
    for row, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for col, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= row < height and 0 <= col < width:
                total += wy * wx * float(image[row, col])
    return total


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(x: float, t: float) -> float:
    return -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))


def dice(logits: list[float], targets: list[float]) -> float:
    probs = [sigmoid(x) for x in logits]
    return 1 - (2 * sum(p * t for p, t in zip(probs, targets)) + 1) / (sum(probs) + sum(targets) + 1)


# --- targets, sampling --------------------------------------------------------------------------------------------

def test_targets_from_labels_one_mask_per_present_class():
    labels = torch.tensor([[[0, 0, 3], [255, 3, 1]], [[255, 255, 255], [255, 255, 255]]])
    first, empty = targets_from_labels(labels, ignore_index=255)
    assert first.classes.tolist() == [0, 1, 3] and first.classes.dtype == torch.long
    expected = [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0]]]
    assert first.masks.int().tolist() == expected
    assert empty.classes.numel() == 0 and empty.masks.shape == (0, 2, 3)


def test_point_sample_is_bilinear_on_unit_square_coordinates():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 4, 5, generator=g)
    coords = torch.rand(2, 7, 2, generator=g)
    out = point_sample(images, coords)
    assert out.shape == (2, 3, 7)
    for n, c, p in itertools.product(range(2), range(3), range(7)):
        assert float(out[n, c, p]) == pytest.approx(bilinear(images[n, c], *coords[n, p].tolist()), abs=1e-5)
    torch.testing.assert_close(point_sample(images[:, 0], coords), out[:, 0])


def test_uncertainty_points_keep_the_most_uncertain_candidates_then_fresh_ones():
    logits = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(1))
    coords = uncertainty_points(logits, 8, 3.0, 0.75, generator=torch.Generator().manual_seed(5))
    assert coords.shape == (3, 8, 2)
    replay = torch.Generator().manual_seed(5)
    candidates = torch.rand(3, 24, 2, generator=replay)
    fresh = torch.rand(3, 2, 2, generator=replay)
    for m in range(3):
        uncertainty = [-abs(bilinear(logits[m], *xy.tolist())) for xy in candidates[m]]
        best = sorted(range(24), key=lambda i: uncertainty[i], reverse=True)[:6]
        assert sorted(map(tuple, coords[m, :6].tolist())) == sorted(tuple(candidates[m, i].tolist()) for i in best)
    torch.testing.assert_close(coords[:, 6:], fresh)


# --- matcher ------------------------------------------------------------------------------------------------------

def independent_cost(class_logits, mask_logits, target, coords, weights=(2.0, 5.0, 5.0)) -> list[list[float]]:
    class_w, mask_w, dice_w = weights
    xy = coords.tolist()
    probs = class_logits.softmax(-1)
    cost = []
    for q in range(mask_logits.shape[0]):
        pred = [bilinear(mask_logits[q], x, y) for x, y in xy]
        row = []
        for m, cls in enumerate(target.classes.tolist()):
            tgt = [bilinear(target.masks[m].float(), x, y) for x, y in xy]
            mask_cost = sum(bce(p, t) for p, t in zip(pred, tgt)) / len(xy)
            row.append(mask_w * mask_cost + dice_w * dice(pred, tgt) - class_w * float(probs[q, cls]))
        cost.append(row)
    return cost


@pytest.mark.parametrize("weights", [(2.0, 5.0, 5.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
@pytest.mark.parametrize("seed", range(3))
def test_matcher_assignment_has_brute_force_minimum_cost(seed, weights):
    g = torch.Generator().manual_seed(seed)
    num_queries, num_points, num_classes = 4 + seed % 2, 6, 6
    class_logits = torch.randn(2, num_queries, num_classes + 1, generator=g)
    mask_logits = 3 * torch.randn(2, num_queries, 8, 8, generator=g)
    targets = []
    for num_targets in (1 + seed, 4 - seed % 3):
        classes = torch.randperm(num_classes, generator=g)[:num_targets]
        targets.append(MaskTarget(classes, torch.rand(num_targets, 8, 8, generator=g) > 0.5))

    matcher = HungarianMatcher(*weights, num_points=num_points, generator=torch.Generator().manual_seed(100 + seed))
    matching = matcher(class_logits, mask_logits, targets)

    replay = torch.Generator().manual_seed(100 + seed)
    for b, (pred_idx, tgt_idx) in enumerate(matching):
        coords = torch.rand(num_points, 2, generator=replay)  # one shared draw per image, in batch order
        cost = independent_cost(class_logits[b], mask_logits[b], targets[b], coords, weights)
        num_targets = len(targets[b].classes)
        assert pred_idx.dtype == tgt_idx.dtype == torch.long
        assert sorted(tgt_idx.tolist()) == list(range(num_targets)) and len(set(pred_idx.tolist())) == num_targets
        got = sum(cost[p][t] for p, t in zip(pred_idx.tolist(), tgt_idx.tolist()))
        best = min(
            sum(cost[q][t] for t, q in enumerate(queries))
            for queries in itertools.permutations(range(num_queries), num_targets)
        )
        assert got == pytest.approx(best, rel=1e-5, abs=1e-5)


def test_matcher_gives_empty_indices_for_an_image_without_targets():
    targets = [MaskTarget(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.bool))]
    ((pred_idx, tgt_idx),) = HungarianMatcher(num_points=8)(torch.randn(1, 3, 4), torch.randn(1, 3, 4, 4), targets)
    assert pred_idx.numel() == tgt_idx.numel() == 0 and pred_idx.dtype == torch.long


# --- loss ---------------------------------------------------------------------------------------------------------

SIZE = 4
PIXEL_CENTRES = torch.stack(torch.meshgrid(
    (torch.arange(SIZE) + 0.5) / SIZE, (torch.arange(SIZE) + 0.5) / SIZE, indexing="xy"), dim=-1).reshape(-1, 2)


@pytest.fixture
def pixel_centre_points(monkeypatch):
    """Replace importance sampling by every pixel centre, so point sampling reads pixels exactly."""
    calls = []

    def fake(mask_logits, num_points, oversample_ratio, importance_ratio, generator=None):
        assert not torch.is_grad_enabled()
        calls.append(mask_logits.shape)
        return PIXEL_CENTRES.expand(mask_logits.shape[0], -1, -1)

    monkeypatch.setattr(mask_classification, "uncertainty_points", fake)
    return calls


DEFAULT_MATCH = {(0, 1): 0, (0, 3): 1, (1, 2): 0}


def obvious_problem(classes=((0, 2), (1,)), match=DEFAULT_MATCH, num_queries: int = 4):
    """Targets of the given classes per image; query q of image b is made to predict target t for (b, q): t in match."""
    g = torch.Generator().manual_seed(0)
    targets = [MaskTarget(torch.tensor(c), torch.rand(len(c), SIZE, SIZE, generator=g) > 0.5) for c in classes]
    class_logits = torch.randn(len(classes), num_queries, 4, generator=g)
    mask_logits = torch.randn(len(classes), num_queries, SIZE, SIZE, generator=g)
    for (b, q), t in match.items():
        class_logits[b, q, targets[b].classes[t]] += 8
        mask_logits[b, q] += 6 * (2 * targets[b].masks[t].float() - 1)
    return class_logits, mask_logits, targets, match


def seeded_loss(**kwargs) -> Mask2FormerLoss:
    """Enough matcher points for the obvious matches to win on every draw; seeded for repeatability."""
    return Mask2FormerLoss(3, num_points=256, generator=torch.Generator().manual_seed(0), **kwargs)


def expected_terms(class_logits, mask_logits, targets, match, no_object_weight):
    """CE (weighted mean over all queries), BCE and dice (summed over matched masks / number of masks)."""
    log_probs = class_logits.log_softmax(-1)
    weighted, weight_sum = 0.0, 0.0
    for b, q in itertools.product(range(class_logits.shape[0]), range(class_logits.shape[1])):
        cls = int(targets[b].classes[match[b, q]]) if (b, q) in match else class_logits.shape[2] - 1
        w = no_object_weight if (b, q) not in match else 1.0
        weighted += -w * float(log_probs[b, q, cls])
        weight_sum += w
    bce_sum, dice_sum = 0.0, 0.0
    for (b, q), t in match.items():
        pred = mask_logits[b, q].flatten().tolist()
        tgt = targets[b].masks[t].float().flatten().tolist()
        bce_sum += sum(bce(x, y) for x, y in zip(pred, tgt)) / len(pred)
        dice_sum += dice(pred, tgt)
    num_masks = sum(len(t.classes) for t in targets)
    return weighted / weight_sum, bce_sum / num_masks, dice_sum / num_masks


@pytest.mark.parametrize("no_object_weight", [0.1, 0.6])
def test_loss_terms_match_independent_computation(pixel_centre_points, no_object_weight):
    class_logits, mask_logits, targets, match = obvious_problem()
    predictions = [MaskPrediction(class_logits, mask_logits), MaskPrediction(0.5 * class_logits, 2 * mask_logits)]
    total, terms = seeded_loss(no_object_weight=no_object_weight)(predictions, targets)

    assert pixel_centre_points == [(3, SIZE, SIZE)] * 2
    expected_total = 0.0
    for layer, prediction in enumerate(predictions):
        ce, bce_term, dice_term = expected_terms(*prediction, targets, match, no_object_weight)
        for name, value in (("ce", ce), ("bce", bce_term), ("dice", dice_term)):
            assert float(terms[f"layer{layer}/{name}"]) == pytest.approx(value, rel=1e-5, abs=1e-6)
            assert not terms[f"layer{layer}/{name}"].requires_grad
        expected_total += 2 * ce + 5 * bce_term + 5 * dice_term
    assert float(total) == pytest.approx(expected_total, rel=1e-5)


def test_no_object_weight_only_affects_unmatched_queries(pixel_centre_points):
    match = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 0}
    class_logits, mask_logits, targets, _ = obvious_problem(((0, 2), (1, 0)), match, num_queries=2)
    ce = {}
    for weight in (0.1, 0.9):
        _, terms = seeded_loss(no_object_weight=weight)([MaskPrediction(class_logits, mask_logits)], targets)
        ce[weight] = terms["layer0/ce"]
    torch.testing.assert_close(ce[0.1], ce[0.9])  # every query is matched: the no-object weight is unused
    log_probs = class_logits.log_softmax(-1)
    expected = -sum(float(log_probs[b, q, targets[b].classes[t]]) for (b, q), t in match.items()) / 4
    assert float(ce[0.1]) == pytest.approx(expected, rel=1e-5)


def test_doubling_the_batch_with_a_copy_leaves_every_term_unchanged(pixel_centre_points):
    class_logits, mask_logits, targets, _ = obvious_problem()
    criterion = seeded_loss()
    total, terms = criterion([MaskPrediction(class_logits, mask_logits)], targets)
    doubled = MaskPrediction(class_logits.repeat(2, 1, 1), mask_logits.repeat(2, 1, 1, 1))
    total2, terms2 = criterion([doubled], targets + targets)
    for name in ("ce", "bce", "dice"):
        torch.testing.assert_close(terms2[f"layer0/{name}"], terms[f"layer0/{name}"])
    torch.testing.assert_close(total2, total)


def _mask_predictions(batch: int, num_classes: int, layers: int = 3, queries: int = 5):
    gen = torch.Generator().manual_seed(0)
    return [MaskPrediction(torch.randn(batch, queries, num_classes + 1, generator=gen).requires_grad_(),
                           torch.randn(batch, queries, 8, 8, generator=gen).requires_grad_()) for _ in range(layers)]


def test_all_ignore_micro_batch_gives_zero_loss_and_zero_gradients():
    predictions = _mask_predictions(batch=2, num_classes=3)
    targets = targets_from_labels(torch.full((2, 32, 32), 255), 255)
    total, terms = Mask2FormerLoss(3, num_points=64)(predictions, targets)
    total.backward()

    assert total.item() == 0.0 and all(term.item() == 0.0 for term in terms.values())
    for p in predictions:
        assert torch.equal(p.class_logits.grad, torch.zeros_like(p.class_logits))
        assert torch.equal(p.mask_logits.grad, torch.zeros_like(p.mask_logits))


def test_an_all_ignore_image_leaves_the_mask2former_loss_of_the_others_unchanged():
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, :, 16:] = 2
    labels[1] = 255
    both = _mask_predictions(batch=2, num_classes=3)
    alone = [MaskPrediction(p.class_logits.detach()[:1].requires_grad_(), p.mask_logits.detach()[:1].requires_grad_())
             for p in both]

    def loss(predictions, labels):
        criterion = Mask2FormerLoss(3, num_points=64, generator=torch.Generator().manual_seed(1))
        return criterion(predictions, targets_from_labels(labels, 255))[0]

    torch.testing.assert_close(loss(both, labels), loss(alone, labels[:1]), rtol=0, atol=0)


# --- decoder ------------------------------------------------------------------------------------------------------

def test_sine_position_encoding_matches_the_hf_formula():
    h, w, feats = 3, 5, 8
    pos = sine_position_encoding(h, w, feats)
    assert pos.shape == (h * w, 2 * feats)
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        for c in range(2 * feats):
            coordinate, size, k = (i, h, c) if c < feats else (j, w, c - feats)
            angle = (coordinate + 1) / (size + 1e-6) * 2 * math.pi / 10000 ** (2 * (k // 2) / feats)
            expected = math.sin(angle) if k % 2 == 0 else math.cos(angle)
            assert float(pos[i * w + j, c]) == pytest.approx(expected, abs=1e-5)


def test_attention_mask_keeps_positive_positions_and_frees_empty_queries():
    logits = -torch.ones(2, 3, 2, 3)
    logits[0, 1, 0, 2] = logits[0, 1, 1, 0] = 2.0  # partially positive
    logits[1, 2] = 1.0  # positive everywhere
    mask = attention_mask(logits, num_heads=4)
    assert mask.shape == (8, 3, 6) and mask.dtype == torch.bool
    per_image = mask.view(2, 4, 3, 6)
    assert (per_image == per_image[:, :1]).all()  # the same mask for every head, heads of one image adjacent
    assert not per_image[0, 0, 0].any() and not per_image[1, 0, 0].any()  # all negative -> attend everywhere
    assert per_image[0, 0, 1].tolist() == [True, True, False, False, True, True]
    assert not per_image[1, 0, 2].any()


def test_masked_cross_attention_ignores_values_outside_the_query_mask():
    torch.manual_seed(0)
    block = MaskedAttentionBlock(hidden_dim=16, num_heads=2, ffn_dim=32)
    logits = -torch.ones(2, 3, 2, 3)
    logits[1, 0, 0, :2] = 1.0  # image 1, query 0 sees positions 0 and 1 only; image 0 query 0 sees everything
    mask = attention_mask(logits, block.cross_attn.num_heads)
    queries, keys, values = torch.randn(2, 3, 16), torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    changed_keys, changed_values = keys.clone(), values.clone()
    changed_keys[1, 2:] += 3 * torch.randn(4, 16)
    changed_values[1, 2:] += 3 * torch.randn(4, 16)

    def cross(k, v):
        return block.cross_attn(queries, k, v, attn_mask=mask, need_weights=False)[0]

    before, after = cross(keys, values), cross(changed_keys, changed_values)
    torch.testing.assert_close(after[1, 0], before[1, 0])
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1, 1], before[1, 1])


def explicit_attention(module: torch.nn.MultiheadAttention, query, key, value, blocked=None) -> torch.Tensor:
    """Single-example multi-head attention (L x C, S x C) from the module's weights, one head at a time."""
    heads, dim = module.num_heads, module.embed_dim
    head_dim = dim // heads
    w_q, w_k, w_v = module.in_proj_weight.split(dim)
    b_q, b_k, b_v = module.in_proj_bias.split(dim)
    q, k, v = query @ w_q.T + b_q, key @ w_k.T + b_k, value @ w_v.T + b_v
    outputs = []
    for h in range(heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(head_dim)
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        outputs.append(scores.softmax(-1) @ v[:, cols])
    return torch.cat(outputs, dim=-1) @ module.out_proj.weight.T + module.out_proj.bias


def test_block_is_post_norm_masked_cross_attention_then_self_attention_then_ffn():
    torch.manual_seed(0)
    block = MaskedAttentionBlock(hidden_dim=8, num_heads=2, ffn_dim=12)
    for parameter in block.parameters():  # non-trivial norms and biases
        torch.nn.init.normal_(parameter, std=0.5)
    x, pos, memory, key_pos = torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    blocked = torch.tensor([[True, False, False, True, True], [False] * 5, [True, True, True, True, False]])
    out = block(x, pos, memory + key_pos, memory, blocked.repeat(2, 1, 1))

    def norm(module, y):
        return torch.nn.functional.layer_norm(y, (8,), module.weight, module.bias, module.eps)

    y = norm(block.cross_norm, x[0] + explicit_attention(block.cross_attn, x[0] + pos[0], memory[0] + key_pos[0],
                                                         memory[0], blocked))
    y = norm(block.self_norm, y + explicit_attention(block.self_attn, y + pos[0], y + pos[0], y))
    linear1, _, linear2 = block.ffn
    y = norm(block.ffn_norm, y + (y @ linear1.weight.T + linear1.bias).relu() @ linear2.weight.T + linear2.bias)
    torch.testing.assert_close(out[0], y)


def test_decoder_wiring_for_one_block():
    torch.manual_seed(0)
    decoder = Mask2FormerDecoder(6, 3, (2, 3), num_blocks=1, **TINY)
    tokens = torch.randn(2, 6, 6)
    first, last = decoder(tokens)
    values = tokens @ decoder.input_proj.weight.T + decoder.input_proj.bias
    features = values.transpose(1, 2).reshape(2, 16, 2, 3)

    def head(queries):
        normed = decoder.decoder_norm(queries)
        masks = torch.einsum("bqc,bchw->bqhw", decoder.mask_embed(normed), features)
        return decoder.class_head(normed), masks

    queries = decoder.query_feat.weight.expand(2, -1, -1)
    for got, expected in zip(first, head(queries)):
        torch.testing.assert_close(got, expected)
    keys = values + sine_position_encoding(2, 3, 8)
    queries = decoder.blocks[0](queries, decoder.query_pos.weight.expand(2, -1, -1), keys, values,
                                attention_mask(first.mask_logits, 2))
    for got, expected in zip(last, head(queries)):
        torch.testing.assert_close(got, expected)


def test_each_block_is_masked_by_the_previous_prediction(monkeypatch):
    seen = []

    def recording(mask_logits, num_heads):
        seen.append(mask_logits)
        return attention_mask(mask_logits, num_heads)

    monkeypatch.setattr(mask2former, "attention_mask", recording)
    torch.manual_seed(0)
    decoder = Mask2FormerDecoder(8, 3, (2, 3), num_blocks=2, **TINY)
    predictions = decoder(torch.randn(2, 6, 8))
    assert len(seen) == 2 and all(s is p.mask_logits for s, p in zip(seen, predictions[:2]))


def test_nine_blocks_give_ten_predictions_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    decoder = Mask2FormerDecoder(24, 4, (3, 4), **TINY)
    assert len(decoder.blocks) == 9
    tokens = torch.randn(2, 12, 24, requires_grad=True)
    predictions = decoder(tokens)
    assert len(predictions) == 10
    for prediction in predictions:
        assert prediction.class_logits.shape == (2, 5, 5) and prediction.mask_logits.shape == (2, 5, 3, 4)
    targets = targets_from_labels(torch.randint(0, 4, (2, 6, 8)), ignore_index=255)
    total, terms = Mask2FormerLoss(4, num_points=16)(predictions, targets)
    assert len(terms) == 30
    total.backward()
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert tokens.grad.abs().sum() > 0


def test_perfect_hand_made_prediction_scores_miou_one():
    num_classes = 3
    coarse = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1], [2, 2, 1, 1], [0, 0, 0, 2]])
    labels = coarse.repeat_interleave(2, 0).repeat_interleave(2, 1)[None].clone()
    labels[0, 0, 0] = 255
    class_logits = torch.full((1, 5, num_classes + 1), -10.0)
    mask_logits = torch.randn(1, 5, 4, 4)
    for k in range(num_classes):
        class_logits[0, k, k] = 10.0
        mask_logits[0, k] = torch.where(coarse == k, 50.0, -50.0)
    class_logits[0, 3:, -1] = 10.0  # the remaining queries predict no-object
    scores = Mask2FormerDecoder.semantic_scores(MaskPrediction(class_logits, mask_logits), (8, 8))
    assert scores.shape == (1, num_classes, 8, 8)
    matrix = ConfusionMatrix(num_classes, ignore_index=255)
    matrix.update(scores.argmax(1), labels)
    assert matrix.miou() == 1.0


def test_semantic_scores_sum_mask_probabilities_weighted_by_class_probabilities():
    g = torch.Generator().manual_seed(0)
    prediction = MaskPrediction(torch.randn(1, 3, 3, generator=g), torch.randn(1, 3, 2, 2, generator=g))
    scores = Mask2FormerDecoder.semantic_scores(prediction, (2, 2))
    probs = prediction.class_logits.softmax(-1)
    for k, i, j in itertools.product(range(2), range(2), range(2)):
        expected = sum(sigmoid(float(prediction.mask_logits[0, q, i, j])) * float(probs[0, q, k]) for q in range(3))
        assert float(scores[0, k, i, j]) == pytest.approx(expected, rel=1e-5)
