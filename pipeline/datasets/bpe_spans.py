"""Where the words of a caption land in its CLIP token sequence.

The caption is cleaned exactly as open_clip's SimpleTokenizer cleans it, and concepts are
found in that cleaned string, so a concept is a set of character spans of it. The tokenizer's
own pre-token regex gives each pre-token's character span and its BPE pieces, so every token
position is known to come from a span of the string: no decoded text is matched back, and a
word that BPE splits into several pieces, or a hyphenated word that is several pre-tokens, is
covered whole (the authors' cursor walk lost those, and with them the rest of the caption).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, SimpleTokenizer


@functools.cache
def clip_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


@dataclass(frozen=True)
class TokenizedCaption:
    """A cleaned caption and its open_clip token ids.

    `tokens` is SOT, BPE ids, EOT, zero padding, truncated like open_clip (EOT in the last
    slot). `piece_spans[i]` is the character span of the pre-token BPE piece i came from;
    piece i sits at position 1 + i, and only the first `kept` pieces survive truncation.
    """
    text: str
    tokens: np.ndarray  # int32 [context_length]
    piece_spans: np.ndarray  # int64 [pieces, 2]
    kept: int

    def positions(self, char_spans) -> np.ndarray:
        """Sorted token positions of every piece whose pre-token overlaps one of
        `char_spans` ((start, end) pairs of `text`); positions past `kept` included."""
        spans = np.asarray(char_spans, np.int64).reshape(-1, 2)
        starts, ends = self.piece_spans[:, :1], self.piece_spans[:, 1:]
        overlap = (starts < spans[:, 1]) & (ends > spans[:, 0])
        return 1 + np.flatnonzero(overlap.any(axis=1))

    def truncated(self, positions: np.ndarray) -> bool:
        """Whether some of `positions` fell off the end of the token sequence."""
        return bool(positions.size) and int(positions[-1]) > self.kept


def tokenize_caption(caption: str, context_length: int = DEFAULT_CONTEXT_LENGTH) -> TokenizedCaption:
    """Clean and tokenize `caption` as `open_clip.tokenize` does, keeping each piece's span."""
    tok = clip_tokenizer()
    text = tok.clean_fn(caption)
    ids, spans = [], []
    for match in tok.pat.finditer(text):
        pieces = tok.bpe("".join(tok.byte_encoder[b] for b in match.group().encode("utf-8")))
        for piece in pieces.split(" "):
            ids.append(tok.encoder[piece])
            spans.append(match.span())
    kept = min(len(ids), context_length - 2)
    tokens = np.zeros(context_length, np.int32)
    tokens[0] = tok.sot_token_id
    tokens[1:kept + 1] = ids[:kept]
    tokens[kept + 1] = tok.eot_token_id
    piece_spans = np.array(spans, np.int64).reshape(-1, 2)
    return TokenizedCaption(text, tokens, piece_spans, kept)
