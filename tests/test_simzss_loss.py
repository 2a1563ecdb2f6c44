import math

import pytest
import timm
import torch
import torch.nn.functional as F

from pipeline.networks.text_tower import AlignedText, TextTower, TextTowerCfg, tokenize
from pipeline.training.contrastive import clip_loss
from pipeline.training.simzss_loss import concept_embeddings, concept_loss, simzss_loss

B, L, N, D = 4, 10, 6, 8
# Per caption: (concept id, span positions) per slot; -1 = empty slot. Class 3 repeats across
# captions and twice in caption 0; class 5 spans three tokens; caption 3 has only empty slots, one
# of them with stray positions; class 7 in caption 2 has no position and must be dropped.
SLOTS = [
    [(3, [1]), (5, [2, 3, 4]), (3, [6])],
    [(-1, []), (3, [2, 3]), (9, [5])],
    [(5, [1]), (7, []), (9, [2, 8])],
    [(-1, [1]), (-1, [])],
]
K, S = 3, 4


def batch_concepts() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((B, K), -1)
    spans = torch.zeros(B, K, S, dtype=torch.long)
    for b, slots in enumerate(SLOTS):
        for k, (concept, positions) in enumerate(slots):
            ids[b, k] = concept
            spans[b, k, :len(positions)] = torch.tensor(positions, dtype=torch.long)
    return ids, spans


def random_features(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    patches = F.normalize(torch.randn(B, N, D, generator=generator, dtype=torch.float64), dim=-1)
    token_emb = torch.randn(B, L, D, generator=generator, dtype=torch.float64)
    return patches, token_emb


def reference_concept_loss(patches, token_emb, temperature, scale, target, query):
    """Paper eqs. 3, 4, 7-9 with loops; concept = sum of its normalised tokens (authors' code)."""
    occurrences = []
    for b, slots in enumerate(SLOTS):
        for concept, positions in slots:
            if concept >= 0 and positions:
                tokens = [token_emb[b, p] / token_emb[b, p].norm() for p in positions]
                occurrences.append((b, concept, sum(tokens)))
    classes = sorted({concept for _, concept, _ in occurrences})
    h = [sum(emb for _, c, emb in occurrences if c == k) for k in classes]
    h = [row / row.norm() for row in h]
    losses, correct = [], 0
    for b, concept, emb in occurrences:
        q = h[classes.index(concept)] if query == "prototype" else emb / emb.norm()
        sims = [math.exp(float(patches[b, n] @ q) / temperature) for n in range(N)]
        visual = sum(sims[n] / sum(sims) * patches[b, n] for n in range(N))
        visual = visual / visual.norm()
        logits = [scale * float(visual @ row) for row in h]
        best = max(range(len(classes)), key=lambda j: logits[j])
        goal = classes.index(concept) if target == "label" else best
        losses.append(math.log(sum(math.exp(x) for x in logits)) - logits[goal])
        correct += best == classes.index(concept)
    return sum(losses) / len(losses), correct / len(occurrences), len(occurrences)


def test_concept_embeddings_sum_normalised_span_tokens():
    patches, token_emb = random_features()
    ids, spans = batch_concepts()
    emb, owner, slot, label = concept_embeddings(token_emb, ids, spans)
    kept = [(b, k) for b, slots in enumerate(SLOTS) for k, (c, pos) in enumerate(slots) if c >= 0 and pos]
    assert list(zip(owner.tolist(), slot.tolist())) == kept
    assert label.tolist() == [SLOTS[b][k][0] for b, k in kept]
    for row, (b, k) in enumerate(kept):
        expected = sum(token_emb[b, p] / token_emb[b, p].norm() for p in SLOTS[b][k][1])
        assert torch.allclose(emb[row], expected)


@pytest.mark.parametrize("query", ["prototype", "instance"])
@pytest.mark.parametrize("target", ["label", "argmax"])
def test_concept_loss_matches_the_paper_equations(target, query):
    patches, token_emb = random_features()
    ids, spans = batch_concepts()
    out = concept_loss(patches, token_emb, ids, spans, temperature=0.1, scale=1 / 0.07, target=target, query=query)
    loss, accuracy, count = reference_concept_loss(patches, token_emb, 0.1, 1 / 0.07, target, query)
    assert out.loss.item() == pytest.approx(loss, rel=1e-9)
    assert out.accuracy.item() == pytest.approx(accuracy)
    assert out.count == count == 7


def test_targets_and_queries_differ_on_this_batch():
    """Guards the test above: each flag changes the value, so each one is really checked."""
    patches, token_emb = random_features()
    ids, spans = batch_concepts()
    values = {(t, q): concept_loss(patches, token_emb, ids, spans, target=t, query=q).loss.item()
              for t in ("label", "argmax") for q in ("prototype", "instance")}
    assert len({round(v, 9) for v in values.values()}) == 4
    for query in ("prototype", "instance"):
        assert concept_loss(patches, token_emb, ids, spans, query=query).accuracy < 1


def test_unknown_target_or_query_is_rejected():
    patches, token_emb = random_features()
    ids, spans = batch_concepts()
    with pytest.raises(ValueError, match="target must be one of"):
        concept_loss(patches, token_emb, ids, spans, target="labels")
    with pytest.raises(ValueError, match="query one of"):
        concept_loss(patches, token_emb, ids, spans, query="mean")


def test_clip_loss_is_symmetric_infonce_with_scale():
    generator = torch.Generator().manual_seed(1)
    image = F.normalize(torch.randn(5, D, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(5, D, generator=generator, dtype=torch.float64), dim=-1)
    scale = 12.5
    s = [[scale * float(image[i] @ text[j]) for j in range(5)] for i in range(5)]
    image_to_text = sum(math.log(sum(math.exp(s[i][j]) for j in range(5))) - s[i][i] for i in range(5))
    text_to_image = sum(math.log(sum(math.exp(s[i][j]) for i in range(5))) - s[j][j] for j in range(5))
    expected = (image_to_text + text_to_image) / 10
    assert clip_loss(image, text, torch.tensor(scale, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vision = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, embed_dim=16, depth=1,
                               num_heads=2, num_classes=0).requires_grad_(False).eval()
    aligned = AlignedText(TextTower(TextTowerCfg(width=32, layers=1, heads=2), 16))
    return vision, aligned


def run_loss(vision, aligned, concept_weight, ids, spans):
    features = vision.forward_features(torch.rand(2, 3, 32, 32))
    image_global, patches = F.normalize(features[:, 0], dim=-1), F.normalize(features[:, 1:], dim=-1)
    aligned.zero_grad()
    text_global, token_emb = aligned.text(tokenize(["a cat on a bed", "a dog and a cat"]))
    return simzss_loss(image_global, patches, text_global, token_emb, ids, spans, aligned.logit_scale.exp(),
                       concept_weight=concept_weight)


def concepts_of_two_captions() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[3, 8, -1], [5, 3, -1]])
    spans = torch.zeros(2, 3, 16, dtype=torch.long)
    spans[0, 0, 0], spans[0, 1, 0], spans[1, 0, 0], spans[1, 1, 0] = 2, 5, 2, 5
    return ids, spans


def test_gradients_reach_only_the_text_side(models):
    vision, aligned = models
    out = run_loss(vision, aligned, 0.05, *concepts_of_two_captions())
    out.total.backward()
    assert out.concepts == 4 and torch.isfinite(out.total)
    assert out.total.item() == pytest.approx(out.clip.item() + 0.05 * out.concept.item())
    for name, parameter in aligned.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(parameter.grad is None for parameter in vision.parameters())


def test_concept_term_alone_trains_the_text_tower(models):
    vision, aligned = models
    out = run_loss(vision, aligned, 1.0, *concepts_of_two_captions())
    out.concept.backward()
    assert aligned.text.transformer.text_projection.grad.abs().sum() > 0
    assert aligned.text.transformer.token_embedding.weight.grad.abs().sum() > 0
    assert aligned.logit_scale.grad is None


def test_zero_concept_weight_is_the_clip_loss(models):
    vision, aligned = models
    out = run_loss(vision, aligned, 0.0, *concepts_of_two_captions())
    assert torch.equal(out.total, out.clip) and out.concept.item() == 0 and out.concepts == 0


def test_batch_without_concepts_is_the_clip_loss(models):
    vision, aligned = models
    ids, spans = concepts_of_two_captions()
    out = run_loss(vision, aligned, 0.05, torch.full_like(ids, -1), spans)
    assert torch.isfinite(out.total) and out.total.item() == out.clip.item()
    assert out.concept.item() == 0 and out.concepts == 0 and out.concept_accuracy.item() == 0
    out.total.backward()
    assert aligned.logit_scale.grad is not None
