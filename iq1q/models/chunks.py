"""The text a model is evaluated on, cut into chunks: shared by perplexity and imatrix.

Which tokens are scored (the token ids are those of iq1q.models.tokenizer, equal to
llama.cpp's):

* default: the text's tokens (no BOS) are cut into chunks of ctx - 1; each chunk is
  evaluated with BOS prepended (ctx tokens, positions 0..ctx-1) and every token after the
  first, i.e. all ctx - 1 text tokens, is scored from the logits of the position before it.
  A text shorter than one chunk is one shorter chunk.
* llama_compatible: as llama.cpp's llama-perplexity (and llama-imatrix): the text's tokens
  with BOS in front are cut into chunks of ctx, the first token of each chunk is replaced
  by BOS, and only the second half is scored (the tokens at chunk positions ctx/2 + 1 ..
  ctx - 1, i.e. ctx - 1 - ctx/2 per chunk). It needs at least 2 * ctx tokens, as
  llama-perplexity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .model import ModelError

EVAL_TEXT = "coriolanus.txt"  # iq1q/models/data/: the opening of Shakespeare's Coriolanus (public domain)


def builtin_text() -> str:
    return resources.files(__package__).joinpath("data", EVAL_TEXT).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Chunk:
    tokens: np.ndarray  # evaluated at positions 0..len-1
    first: int          # logits at positions first..len-2 score tokens[first+1..len-1]


def chunks(text_ids: Sequence[int], ctx: int, bos: int | None, llama_compatible: bool = False,
           max_chunks: int | None = None) -> list[Chunk]:
    """The chunks to evaluate; text_ids are the text's tokens without BOS."""
    if ctx < 2:
        raise ValueError(f"ctx must be at least 2, got {ctx}")
    if bos is None:
        raise ModelError("the model has no tokenizer.ggml.bos_token_id; perplexity chunks start with BOS")
    ids = np.asarray(text_ids, np.int64)
    if llama_compatible:
        ids = np.concatenate([[bos], ids])
        if ids.size < 2 * ctx:
            raise ValueError(f"--llama-compatible needs at least 2 * ctx = {2 * ctx} tokens, the text has {ids.size}")
        n = ids.size // ctx
        out = []
        for i in range(n):
            c = ids[i * ctx:(i + 1) * ctx].copy()
            c[0] = bos
            out.append(Chunk(c, ctx // 2))
    else:
        step = ctx - 1
        if ids.size < 1:
            raise ValueError("the text has no tokens")
        n = max(1, ids.size // step)
        out = [Chunk(np.concatenate([[bos], ids[i * step:(i + 1) * step]]), 0) for i in range(n)]
    return out[:max_chunks] if max_chunks else out


def calibration_chunks(text_ids: Sequence[int], ctx: int, bos: int | None, max_chunks: int | None = None) -> list[Chunk]:
    """llama-imatrix's chunks of a calibration text (ctx tokens, the first replaced by BOS), or
    one chunk of the whole text when it is shorter than two chunks; ValueError if shorter than one."""
    if len(text_ids) + 1 < ctx:
        raise ValueError(f"the text has {len(text_ids)} tokens, fewer than one chunk of --ctx {ctx}")
    if len(text_ids) + 1 >= 2 * ctx:
        return chunks(text_ids, ctx, bos, llama_compatible=True, max_chunks=max_chunks)
    return [chunks(text_ids, ctx, bos, max_chunks=1)[0]]
