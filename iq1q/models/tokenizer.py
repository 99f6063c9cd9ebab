"""Tokenizers built from a GGUF file's own vocabulary (`tokenizer.ggml.*`).

`tokenizer.ggml.model == "llama"` is SentencePiece BPE (Llama 1/2, Gemma): llama.cpp's
`llm_tokenizer_spm` merges the highest-scoring adjacent pair whose concatenation is in the
vocabulary, with byte fallback, after turning spaces into U+2581. That is the algorithm of
the `sentencepiece` library's BPE model, so the tokenizer here is a SentencePiece model
assembled from the GGUF's tokens, scores and token types (the extra `iq1q[tokenizer]`);
nothing of the algorithm is reimplemented. Other tokenizer models (e.g. "gpt2" BPE) are not
supported yet and raise TokenizerError naming the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class TokenizerError(ValueError):
    """The GGUF's vocabulary cannot be turned into a tokenizer here."""


# llama.cpp's llama_token_type and SentencePiece's ModelProto.SentencePiece.Type share numbers
UNKNOWN, CONTROL, USER_DEFINED, BYTE = 2, 3, 4, 6

# llama.cpp (llama-vocab.cpp) makes these end-of-generation texts CONTROL whatever the file
# says, so it never splits them out of the text as user-defined tokens; here such a token
# becomes an ordinary piece, which the merges may still form, as in llama.cpp
EOG_TEXTS = frozenset([
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>",
])
NORMAL, SPACE = 1, "\u2581"

# ModelProto field numbers (sentencepiece_model.proto)
_PIECES, _TRAINER, _NORMALIZER = 1, 2, 3
_TRAINER_MODEL_TYPE, _TRAINER_BYTE_FALLBACK, _BPE = 3, 35, 2
_NORM_NAME, _NORM_DUMMY_PREFIX, _NORM_REMOVE_SPACES, _NORM_ESCAPE_SPACES = 1, 3, 4, 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _flag(num: int, value: int) -> bytes:  # varint (wire type 0)
    return _varint(num << 3) + _varint(value)


def _varints(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first byte, second byte or -1) of the varints of v, all below 2^14."""
    two = v >= 0x80
    return np.where(two, (v & 0x7F) | 0x80, v), np.where(two, v >> 7, -1)


def _joined(texts: list[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of every text, one after another, and each one's length. One join and
    one encode where no text holds a NUL (Gemma's 262k: 0.05 s one by one)."""
    if all(isinstance(t, str) for t in texts):
        blob = np.frombuffer("\0".join(texts).encode("utf-8"), np.uint8)
        cuts = np.flatnonzero(blob == 0)
        if cuts.size == len(texts) - 1:
            lens = np.diff(cuts, prepend=-1, append=blob.size) - 1
            return blob[blob != 0], lens
    raw = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    return np.frombuffer(b"".join(raw), np.uint8), np.fromiter(map(len, raw), np.int64, len(raw))


def _pieces(text: np.ndarray, lens: np.ndarray, scores: np.ndarray, types: np.ndarray) -> bytes:
    """The repeated `pieces` field of a ModelProto: (piece text, score, type) per token, the
    texts given as their bytes one after another (text) and their lengths. With numpy over
    all tokens at once: a Python loop over Gemma's 262k took 0.3 s."""
    piece_len = 1 + 1 + (lens >= 0x80) + lens + 5 + 2  # text tag and length, text, score, type
    record = 1 + 1 + (piece_len >= 0x80) + piece_len
    if lens.size and record.max() >= 1 << 14:
        raise TokenizerError("a vocabulary token is too long for this tokenizer (over 16 KiB)")
    start = np.concatenate([[0], np.cumsum(record)])
    out = np.empty(int(start[-1]), np.uint8)
    o = start[:-1]

    def put(at: np.ndarray, v: np.ndarray) -> np.ndarray:  # a varint at `at`; returns what follows
        first, second = _varints(v)
        out[at] = first
        two = second >= 0
        out[at[two] + 1] = second[two]
        return at + 1 + two

    out[o] = _PIECES << 3 | 2
    p = put(o + 1, piece_len)
    out[p] = 1 << 3 | 2
    t = put(p + 1, lens)
    s = t + lens
    # the texts fill [t, s) of every record, in order: a mask of those bytes, made by
    # marking where each span starts and ends (int64 indices per byte: 3x the time)
    edges = np.zeros(out.size + 1, np.int8)
    edges[t] += 1  # each index once per statement; an empty text's t is its s
    edges[s] -= 1
    out[np.cumsum(edges[:-1], dtype=np.int8).view(bool)] = text
    out[s] = 2 << 3 | 5  # score: a 32-bit float
    out[s[:, None] + np.arange(1, 5)] = scores.astype("<f4").view(np.uint8).reshape(-1, 4)
    out[s + 5] = 3 << 3
    out[s + 6] = types  # every token type is below 0x80
    return out.tobytes()


def _model_proto(tokens: list[str], scores: np.ndarray, types: np.ndarray, add_space_prefix: bool) -> bytes:
    # Serialized by hand so that the protobuf package is not a dependency
    types, texts = types.copy(), list(tokens)
    for i in np.flatnonzero(types == USER_DEFINED):
        if tokens[i] in EOG_TEXTS:
            types[i] = NORMAL
        else:  # llama.cpp matches them in the raw text, sentencepiece after escaping spaces
            texts[i] = tokens[i].replace(" ", SPACE)
    if types.size and not (0 <= types.min() and types.max() < 0x80):
        raise TokenizerError(f"token types must be in [0, 128), got {types.min()}..{types.max()}")
    trainer = _flag(_TRAINER_MODEL_TYPE, _BPE) + _flag(_TRAINER_BYTE_FALLBACK, 1)
    # llama.cpp neither normalizes nor collapses spaces; proto2 defaults for these are true
    normalizer = (_field(_NORM_NAME, b"identity") + _flag(_NORM_DUMMY_PREFIX, int(add_space_prefix))
                  + _flag(_NORM_REMOVE_SPACES, 0) + _flag(_NORM_ESCAPE_SPACES, 1))
    return _pieces(*_joined(texts), scores, types) + _field(_TRAINER, trainer) + _field(_NORMALIZER, normalizer)


def _require(metadata: Mapping[str, Any], key: str) -> Any:
    if key not in metadata:
        raise TokenizerError(f"GGUF metadata has no {key!r}: cannot build its tokenizer")
    return metadata[key]


class Tokenizer:
    """Text -> token ids as llama.cpp's llama_tokenize(add_special=True, parse_special=False)."""

    def __init__(self, metadata: Mapping[str, Any]):
        model = str(_require(metadata, "tokenizer.ggml.model"))
        if model != "llama":
            raise TokenizerError(f"tokenizer model {model!r} is not supported (only 'llama', i.e. SentencePiece BPE)")
        try:
            import sentencepiece
        except ImportError as e:
            raise ImportError(f"{e}: the tokenizer needs: pip install 'iq1q[tokenizer]'") from None
        tokens = list(_require(metadata, "tokenizer.ggml.tokens"))
        n = len(tokens)
        scores = np.asarray(metadata.get("tokenizer.ggml.scores", np.zeros(n)), np.float32)
        types = np.asarray(metadata.get("tokenizer.ggml.token_type", np.ones(n)), np.int64).copy()
        if scores.size != n or types.size != n:
            raise TokenizerError(f"tokenizer.ggml.scores/token_type hold {scores.size}/{types.size} "
                                 f"values for {n} tokens")
        unk = metadata.get("tokenizer.ggml.unknown_token_id")
        if unk is not None and (types == UNKNOWN).sum() == 0:
            types[int(unk)] = UNKNOWN  # SentencePiece needs one; llama.cpp files may mark it CONTROL
        if (types == UNKNOWN).sum() != 1:
            raise TokenizerError("the vocabulary needs exactly one unknown token "
                                 "(tokenizer.ggml.unknown_token_id or a token of type 2)")
        self.vocab_size = n
        self.bos_id = int(metadata["tokenizer.ggml.bos_token_id"]) if "tokenizer.ggml.bos_token_id" in metadata else None
        self.eos_id = int(metadata["tokenizer.ggml.eos_token_id"]) if "tokenizer.ggml.eos_token_id" in metadata else None
        # llama.cpp's default for SPM vocabularies is to add BOS and a space prefix
        self.add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", True)) and self.bos_id is not None
        add_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(_model_proto(tokens, scores, types, add_space_prefix))
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"sentencepiece rejected the GGUF vocabulary: {e}") from None
        if self._sp.GetPieceSize() != n:
            raise TokenizerError(f"sentencepiece kept {self._sp.GetPieceSize()} of {n} tokens (duplicates?)")

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of text, BOS first when the model asks for it (or add_bos says so)."""
        ids = self._sp.EncodeAsIds(text) if text else []
        if self.add_bos if add_bos is None else add_bos:
            if self.bos_id is None:
                raise TokenizerError("the model has no tokenizer.ggml.bos_token_id")
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._sp.DecodeIds([int(i) for i in ids])


def from_gguf(metadata: Mapping[str, Any]) -> Tokenizer:
    return Tokenizer(metadata)
