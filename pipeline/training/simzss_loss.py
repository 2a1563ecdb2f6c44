"""SimZSS objective (paper §3.2-3.3, reference §3): CLIP loss (contrastive.py) on the global embeddings plus the
concept-level loss on text concepts and the visual concepts they pool from the paired image's patches.

Under torchrun each process holds a slice of the global batch. The losses gather the text side
(with gradients) and the frozen image side from every process, so each process scores its own
rows against the whole batch; the value a process returns, averaged over the processes (as the
gradients are), is the loss of the global batch. Concept classes are built from the global
batch, so a class present only on another process is a real negative, not the logit 0 of the
authors' gather (reference §3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, get_args

import torch
import torch.nn.functional as F

from pipeline.training.choices import ConceptQuery, ConceptTarget
from pipeline.training.contrastive import clip_loss
from pipeline.training.distributed import Processes

TARGETS = get_args(ConceptTarget)
QUERIES = get_args(ConceptQuery)


class ConceptEmbeddings(NamedTuple):
    """The M concept occurrences of a batch, in caption-major slot order."""
    emb: torch.Tensor    # M x D text concepts, unnormalised
    owner: torch.Tensor  # M caption index of each
    slot: torch.Tensor   # M slot index (of the 32) of each
    label: torch.Tensor  # M concept (bank) id of each


def concept_embeddings(token_emb: torch.Tensor, concept_ids: torch.Tensor,
                       spans: torch.Tensor) -> ConceptEmbeddings:
    """Sum of the L2-normalised projected tokens at each concept's span positions.

    token_emb is B x L x D (TextTower's per-token output), concept_ids B x K (-1 = empty slot),
    spans B x K x S absolute token positions (0 = padding: position 0 is SOT, never in a concept).
    An occurrence is a slot with an id >= 0 and at least one position. The authors' code sums the
    tokens where the paper (eq. 1) averages them; see `concept_loss` for when that matters.
    """
    normed = F.normalize(token_emb, dim=-1)
    used = (spans > 0).to(normed.dtype)
    weights = normed.new_zeros(*spans.shape[:2], token_emb.shape[1]).scatter_add_(2, spans, used)
    per_slot = weights @ normed
    owner, slot = ((concept_ids >= 0) & (spans > 0).any(dim=-1)).nonzero(as_tuple=True)
    return ConceptEmbeddings(per_slot[owner, slot], owner, slot, concept_ids[owner, slot])


def similarity_pool(patches: torch.Tensor, queries: torch.Tensor, owner: torch.Tensor, slot: torch.Tensor,
                    num_slots: int, temperature: float) -> torch.Tensor:
    """M x D L2-normalised visual concepts (paper eqs. 3-4) from each query's own image's patches.

    Queries are laid out per caption (B x num_slots) so every image's patches are used once in a
    batched matmul instead of being copied per occurrence; unused slots are computed and dropped.
    """
    batch, _, dim = patches.shape
    laid_out = queries.new_zeros(batch, num_slots, dim).index_put((owner, slot), queries)
    weights = torch.softmax(patches @ laid_out.transpose(1, 2) / temperature, dim=1)
    pooled = weights.transpose(1, 2) @ patches
    return F.normalize(pooled[owner, slot], dim=-1)


@dataclass(frozen=True)
class ConceptLossOut:
    loss: torch.Tensor
    accuracy: torch.Tensor  # share of occurrences whose logits' argmax is their own class; 0 when count is 0
    count: int              # number of concept occurrences in the global batch


def concept_loss(patches: torch.Tensor, token_emb: torch.Tensor, concept_ids: torch.Tensor, spans: torch.Tensor,
                 temperature: float = 0.1, scale: float = 1 / 0.07, target: str = "label",
                 query: str = "prototype", procs: Processes = Processes()) -> ConceptLossOut:
    """Concept-level consistency (paper eqs. 3, 4, 7-9; reference §3).

    patches: B x N x D L2-normalised patch tokens of each caption's image; token_emb, concept_ids and
    spans as in `concept_embeddings`. The classifier W has one L2-normalised row per class present in
    the batch, the sum of that class's concept embeddings (eq. 7). Each occurrence pools its image's
    patches with query W[class] ("prototype", authors' code) or its own normalised embedding
    ("instance", eq. 3). Logits = scale * W v (eq. 8); cross-entropy against the occurrence's class
    ("label", eq. 9) or against the argmax of its logits ("argmax", authors' code).

    Summing rather than averaging span tokens changes nothing for an instance query (normalised),
    but inside a prototype it weights an occurrence spanning more tokens more than a shorter one of
    the same class. A batch without occurrences gives a zero loss still attached to the graph.

    Across processes, W comes from the occurrences of the global batch and each process pools and
    scores its own; loss and accuracy are this process's sums over the global count x processes.
    """
    if target not in TARGETS or query not in QUERIES:
        raise ValueError(f"concept_loss: target must be one of {TARGETS} and query one of {QUERIES}, "
                         f"got target={target!r}, query={query!r}")
    emb, owner, slot, label = concept_embeddings(token_emb, concept_ids, spans)
    all_emb, offset = procs.rows(emb, grad=True)
    all_label, _ = procs.rows(label, grad=False)
    if len(all_emb) == 0:
        return ConceptLossOut(emb.sum(), emb.new_zeros(()), 0)
    classes, all_index = torch.unique(all_label, return_inverse=True)
    prototypes = F.normalize(emb.new_zeros(len(classes), emb.shape[1]).index_add_(0, all_index, all_emb), dim=-1)
    class_index = all_index[offset:offset + len(emb)]
    queries = prototypes[class_index] if query == "prototype" else F.normalize(emb, dim=-1)
    visual = similarity_pool(patches, queries, owner, slot, concept_ids.shape[1], temperature)
    logits = scale * visual @ prototypes.T
    predicted = logits.argmax(dim=1)
    share = procs.world_size / len(all_emb)
    loss = F.cross_entropy(logits, class_index if target == "label" else predicted, reduction="sum") * share
    accuracy = (predicted == class_index).sum().detach() * share
    return ConceptLossOut(loss, accuracy, len(all_emb))


@dataclass(frozen=True)
class SimZSSLossOut:
    total: torch.Tensor
    clip: torch.Tensor
    concept: torch.Tensor
    concept_accuracy: torch.Tensor
    concepts: int


def simzss_loss(image_global: torch.Tensor, patches: torch.Tensor, text_global: torch.Tensor,
                token_emb: torch.Tensor, concept_ids: torch.Tensor, spans: torch.Tensor,
                logit_scale: torch.Tensor, concept_weight: float = 0.05, temperature: float = 0.1,
                scale: float = 1 / 0.07, target: str = "label", query: str = "prototype",
                procs: Processes = Processes()) -> SimZSSLossOut:
    """total = clip + concept_weight * concept (paper eq. 10).

    image_global (B x D) and patches (B x N x D) must already be L2-normalised (the frozen vision
    side does it); text_global and token_emb are TextTower's raw outputs, normalised here.
    logit_scale is exp(AlignedText.logit_scale). concept_weight 0 is LiT: the concept term is skipped.
    `procs`: the processes holding the rest of the global batch (see the module docstring).
    """
    clip = clip_loss(image_global, F.normalize(text_global, dim=-1), logit_scale, procs)
    if concept_weight == 0:
        zero = clip.new_zeros(())
        return SimZSSLossOut(clip, clip, zero, zero, 0)
    concept = concept_loss(patches, token_emb, concept_ids, spans, temperature, scale, target, query, procs)
    return SimZSSLossOut(clip + concept_weight * concept.loss, clip, concept.loss, concept.accuracy, concept.count)
