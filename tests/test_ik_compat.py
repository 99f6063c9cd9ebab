"""`iq1q quantize` against files ik_llama.cpp's own llama-quantize writes (skipped where
ik's tools are not built: benchmarks/ikbench/build-tools.sh, then tests/ik_nofma_quantize.sh;
see benchmarks/ikbench/README.md).

ik's regular build lets GCC contract multiply-adds into FMA, which moves a few
quantizer decisions (docs/spec.md §1.6); iq1q follows strict float32, i.e. ik built
-ffp-contract=off, and must equal that build byte for byte, file for file. Against
the regular build only those few bytes may differ. Each ik run spends ~15 s building
its grid tables, so there is one run per format."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tqdm")

from iq1q import gguf_io  # noqa: E402
from iq1q.models.quantize import quantize_model  # noqa: E402

from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf_models import ik_nofma_quantize, require_ik, run_ik_quantize, tiny_llama, write_legacy_imatrix  # noqa: E402


def differing_bytes(ik_path, mine_path) -> dict[str, int]:
    """Differing bytes per tensor; types, shapes, order and metadata must agree."""
    a, b = gguf_io.read(ik_path), gguf_io.read(mine_path)
    assert list(a.raw) == list(b.raw)
    assert a.metadata.keys() == b.metadata.keys()
    for k, v in a.metadata.items():
        assert np.array_equal(v, b.metadata[k]) if isinstance(v, np.ndarray) else v == b.metadata[k], k
    diff = {}
    for n, x in a.raw.items():
        y = b.raw[n]
        assert (x.type_name, x.shape) == (y.type_name, y.shape), n
        diff[n] = int(np.count_nonzero(x.data != y.data))
    return diff


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Two blocks, a dense one and one of 4 experts (quantize never checks the architecture's
    tensor list), Q8_0 source; an imatrix like llama-imatrix's: no ffn_gate entries (ik fuses
    gate and up), zero columns."""
    require_ik("llama-quantize")
    d = tmp_path_factory.mktemp("ik")
    rng = np.random.default_rng(7)
    dense = tiny_llama(d / "a.gguf", n_embd=256, n_head=4, n_head_kv=2, n_ff=512,
                       weights=lambda s, i: rng.standard_normal(s).astype(np.float32) * 0.02)
    moe = tiny_llama(d / "b.gguf", n_embd=256, n_head=4, n_head_kv=2, n_ff=256, n_expert=4,
                     weights=lambda s, i: rng.standard_normal(s).astype(np.float32) * 0.02)
    w = gguf.GGUFWriter(str(d / "model.gguf"), "llama")
    for k, f in gguf.GGUFReader(d / "a.gguf").fields.items():
        if not k.startswith("GGUF.") and k != "general.architecture":
            w.add_key_value(k, f.contents(), f.types[0], f.types[-1] if len(f.types) > 1 else None)
    w.add_uint32("llama.block_count", 2)  # replaces a.gguf's 1
    tensors = dict(dense) | {n.replace("blk.0.", "blk.1."): x for n, x in moe.items() if n.startswith("blk.")}
    for n, x in tensors.items():
        q = x if x.ndim == 1 else gguf.quants.quantize(x, T.Q8_0)
        w.add_tensor(n, q, raw_dtype=None if x.ndim == 1 else T.Q8_0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    entries = {}
    for n, x in tensors.items():
        if n.startswith("blk.") and x.ndim >= 2 and "norm" not in n and "gate" not in n:
            v = (rng.random(x.shape[-1] * (x.shape[0] if x.ndim == 3 else 1)) ** 4 * 30).astype(np.float32)
            v[::29] = 0
            entries[n] = (9, v * np.float32(9))
    write_legacy_imatrix(d / "im.dat", entries)
    return d


@pytest.mark.parametrize("fmt", ["iq1_s", "iq1_m", "iq1_s_r4", "iq1_m_r4"])
def test_equal_to_ik_llama_quantize_pure_with_imatrix(model, fmt):
    src, im = model / "model.gguf", str(model / "im.dat")  # ik stores this path string too
    mine = model / f"mine-{fmt}.gguf"
    s = quantize_model(src, mine, fmt, imatrix=im, progress=False)
    assert sum(t.tensors for ty, t in s.by_type.items() if ty.startswith("iq1")) == 14 and not s.fallbacks
    ik = model / f"ik-{fmt}.gguf"
    nofma = ik_nofma_quantize()
    run_ik_quantize(src, ik, fmt, "--imatrix", im, "--token-embedding-type", "q8_0", tool=nofma)
    diff = differing_bytes(ik, mine)
    if nofma is not None:  # strict float32 on both sides: every byte
        assert diff == dict.fromkeys(diff, 0)
    else:  # FMA rounding: a few bytes of a few tensors, not a different quantization
        sizes = {n: r.nbytes for n, r in gguf_io.read(ik).raw.items()}
        assert all(d <= 0.02 * sizes[n] for n, d in diff.items()), diff
