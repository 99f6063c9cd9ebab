"""iq1q.gguf_io against the gguf package's own reader, writer and numpy dequantizers."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iq1q  # noqa: E402
from iq1q import gguf_io  # noqa: E402
from oracle import row_size  # noqa: E402  (docs/spec.md §4.9, written from the spec)

from gguf import GGMLQuantizationType as T, GGUFReader, GGUFValueType as V  # noqa: E402
from gguf_models import add  # noqa: E402


def _pad(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@pytest.fixture
def mats(rng):
    return {k: rng.standard_normal((8, 512)).astype(np.float32) for k in "abcd"}


def test_write_then_gguf_reader_sees_the_same_bytes_and_metadata(tmp_path, mats):
    qs, qm = iq1q.quantize(mats["a"], "iq1_s"), iq1q.quantize(mats["b"], "iq1_m")
    h = mats["c"].astype(np.float16)
    tensors = {"w.iq1_s": qs, "w.iq1_m": qm, "norm": np.arange(5, dtype=np.float32), "h": h,
               "ids": np.arange(6, dtype=np.int32)}
    meta = {"general.architecture": "llama", "general.alignment": np.uint32(64),
            "llama.block_count": np.uint32(3), "a.i64": np.int64(-5), "a.f64": np.float64(0.1),
            "a.f32": 1.5, "a.bool": True, "a.str": "héllo", "a.strs": ["x", "yy"],
            "a.u8s": np.array([1, 2, 250], np.uint8), "a.int": 7}
    path = tmp_path / "t.gguf"
    gguf_io.write(path, tensors, meta)

    r = GGUFReader(path)
    assert r.alignment == 64 and r.data_offset % 64 == 0
    got = {t.name: t for t in r.tensors}
    assert list(got) == list(tensors)
    for name, t in got.items():
        assert (t.data_offset - r.data_offset) % 64 == 0
    assert got["w.iq1_s"].tensor_type == T.IQ1_S and got["w.iq1_m"].tensor_type == T.IQ1_M
    assert bytes(got["w.iq1_s"].data) == qs.tobytes() and bytes(got["w.iq1_m"].data) == qm.tobytes()
    assert list(got["w.iq1_s"].shape) == [512, 8]  # ggml order: ne0 = row length
    assert np.array_equal(got["h"].data, h) and got["h"].tensor_type == T.F16
    assert got["ids"].tensor_type == T.I32 and np.array_equal(got["ids"].data, np.arange(6))
    f = r.fields
    assert f["general.alignment"].types == [V.UINT32]
    assert f["llama.block_count"].types == [V.UINT32] and f["llama.block_count"].contents() == 3
    assert f["a.i64"].types == [V.INT64] and f["a.i64"].contents() == -5
    assert f["a.f64"].types == [V.FLOAT64] and f["a.f32"].types == [V.FLOAT32]
    assert f["a.bool"].contents() is True and f["a.str"].contents() == "héllo"
    assert f["a.strs"].contents() == ["x", "yy"] and f["a.u8s"].types == [V.ARRAY, V.UINT8]
    assert f["a.int"].types == [V.INT32]


def test_metadata_round_trips_with_its_types(tmp_path):
    src = tmp_path / "src.gguf"
    w = gguf.GGUFWriter(str(src), "gemma3")
    w.add_uint32("u32", 7)
    w.add_int16("i16", -3)
    w.add_float64("f64", 2.5)
    w.add_bool("b", False)
    w.add_array("toks", ["a", "b", "c"])
    w.add_key_value("scores", [0.5, 1.5], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("types", [1, 2, 3], V.ARRAY, sub_type=V.INT32)
    add(w, "x", np.ones((2, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()

    m = gguf_io.read(src).metadata
    assert m["u32"] == 7 and m["u32"].dtype == np.uint32 and m["i16"].dtype == np.int16
    assert m["b"] is False and m["toks"] == ["a", "b", "c"]
    assert m["scores"].dtype == np.float32 and m["types"].dtype == np.int32

    out = tmp_path / "out.gguf"
    gguf_io.write(out, {"x": np.ones((2, 32), np.float32)}, m)
    a, b = GGUFReader(src).fields, GGUFReader(out).fields
    for k in ("general.architecture", "u32", "i16", "f64", "b", "toks", "scores", "types"):
        assert a[k].types == b[k].types and a[k].contents() == b[k].contents(), k


def test_plain_iq1_files_dequantize_in_gguf_to_iq1q_values(tmp_path, rng):
    w = rng.standard_normal((16, 768)).astype(np.float32)
    qs, qm = iq1q.quantize(w, "iq1_s"), iq1q.quantize(w, "iq1_m")
    path = tmp_path / "p.gguf"
    gguf_io.write(path, {"s": qs, "m": qm})
    for t in GGUFReader(path).tensors:  # gguf's numpy dequantizers, an independent reading
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        mine = (qs if t.name == "s" else qm).dequantize()
        assert ref.shape == (16, 768)
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_r4_file_layout_follows_spec_4_10(tmp_path, rng):
    """Offsets and sizes from docs/spec.md §4.9/§4.10's row sizes (the test oracle's table), checked on
    the file's bytes; the gguf package cannot read this file at all."""
    ws = {"a": (rng.standard_normal((8, 640)), "iq1_s_r4"), "b": (rng.standard_normal((12, 96)), "iq1_m_r4"),
          "n": (None, None), "c": (rng.standard_normal((4, 256)), "iq1_s"),
          "e": (rng.standard_normal((3, 4, 160)), "iq1_m_r4")}
    tensors = {}
    for name, (x, fmt) in ws.items():
        if x is None:
            tensors[name] = np.ones(3, np.float32)
        elif x.ndim == 3:
            tensors[name] = [iq1q.quantize(m.astype(np.float32), fmt) for m in x]
        else:
            tensors[name] = iq1q.quantize(x.astype(np.float32), fmt)
    path = tmp_path / "r4.gguf"
    gguf_io.write(path, tensors)
    with pytest.raises(ValueError, match="219.* is not a valid GGMLQuantizationType"):
        GGUFReader(path)  # why _Reader exists

    sizes = {"a": 8 * row_size("iq1_s_r4", 640), "b": 12 * row_size("iq1_m_r4", 96), "n": 12,
             "c": 4 * row_size("iq1_s", 256), "e": 3 * 4 * row_size("iq1_m_r4", 160)}
    assert sizes["a"] == 8 * (2 + 6 * 640 // 32) and sizes["b"] == 12 * (2 + 7 * 96 // 32)
    f = gguf_io.read(path)
    blob = path.read_bytes()
    start = f.data_offset
    assert start % 32 == 0
    pos = start
    for name, t in tensors.items():
        raw = f.raw[name]
        assert raw.offset == pos and raw.nbytes == sizes[name], name
        want = b"".join(q.tobytes() for q in t) if isinstance(t, list) else (
            t.tobytes() if isinstance(t, iq1q.QuantizedTensor) else t.tobytes())
        assert blob[pos:pos + sizes[name]] == want, name
        pos = start + _pad(pos - start + sizes[name], 32)
    assert len(blob) == pos
    assert f.raw["a"].ggml_type == 219 and f.raw["b"].ggml_type == 229 and f.raw["a"].type_name == "IQ1_S_R4"
    assert f.raw["e"].shape == (3, 4, 160)


def test_read_maps_iq1_tensors_without_copying(tmp_path, rng):
    q = iq1q.quantize(rng.standard_normal((8, 256)).astype(np.float32), "iq1_s_r4")
    experts = [iq1q.quantize(rng.standard_normal((4, 256)).astype(np.float32), "iq1_m") for _ in range(3)]
    path = tmp_path / "m.gguf"
    gguf_io.write(path, {"q": q, "e": experts, "f": np.ones((2, 3), np.float32)})
    f = gguf_io.read(path)
    got = f.tensors["q"]
    assert isinstance(got, iq1q.QuantizedTensor) and got.format == "iq1_s_r4" and got.shape == (8, 256)
    assert got.tobytes() == q.tobytes() and not got.data.flags.writeable
    assert np.shares_memory(got.data, f.raw["q"].data)  # a view of the mapped file
    assert not got.data.flags.owndata
    e = f.tensors["e"]
    assert isinstance(e, tuple) and [x.tobytes() for x in e] == [x.tobytes() for x in experts]
    assert np.shares_memory(e[1].data, f.raw["e"].data)
    np.testing.assert_array_equal(iq1q.dequantize(got), q.dequantize())
    assert f.tensors["f"].shape == (2, 3) and np.shares_memory(f.tensors["f"], f.raw["f"].data)
    with pytest.raises(TypeError):
        f.tensors["q"] = q  # read-only mapping


def test_other_types_are_dequantized_by_gguf_and_copied_byte_for_byte(tmp_path, rng):
    x = rng.standard_normal((4, 256)).astype(np.float32)
    src = tmp_path / "src.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    for qt in (T.Q8_0, T.BF16, T.Q5_0):
        add(w, qt.name, x, qt)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    f = gguf_io.read(src)
    for t in GGUFReader(src).tensors:
        got = f.tensors[t.name]
        assert got.dtype == np.float32 and got.shape == (4, 256)
        np.testing.assert_array_equal(got, gguf.quants.dequantize(t.data, t.tensor_type))
    out = tmp_path / "out.gguf"
    gguf_io.write(out, dict(f.raw), f.metadata)
    for a, b in zip(GGUFReader(src).tensors, GGUFReader(out).tensors):
        assert a.tensor_type == b.tensor_type and bytes(a.data) == bytes(b.data)


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path, rng):
    q = iq1q.quantize(rng.standard_normal((8, 256)).astype(np.float32), "iq1_s_r4")
    path = tmp_path / "ok.gguf"
    gguf_io.write(path, {"q": q, "n": np.ones(300, np.float32)}, {"general.architecture": "x", "k": ["a"] * 50})
    blob = path.read_bytes()
    f = gguf_io.read(path)
    for cut in (0, 3, 10, 30, f.data_offset - 40, f.data_offset + 5, f.raw["n"].offset + 1199):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(blob[:cut])
        with pytest.raises(gguf_io.GGUFError) as e:
            gguf_io.read(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(gguf_io.GGUFError, match="not a valid GGUF"):
        gguf_io.read(junk)
    unknown = bytearray(blob)  # the R4 tensor's type id (219) -> 150, which no one stores in files
    i = unknown.index((219).to_bytes(4, "little"), 24)
    unknown[i:i + 4] = (150).to_bytes(4, "little")
    (tmp_path / "unknown.gguf").write_bytes(unknown)
    with pytest.raises(gguf_io.GGUFError, match="unknown ggml type 150"):
        gguf_io.read(tmp_path / "unknown.gguf")


def test_write_rejects_what_gguf_cannot_hold(tmp_path, rng):
    q = iq1q.quantize(rng.standard_normal((4, 256)).astype(np.float32), "iq1_s")
    with pytest.raises(gguf_io.GGUFError, match="dtype bool"):
        gguf_io.write(tmp_path / "a.gguf", {"x": np.ones(3, bool)})
    with pytest.raises(gguf_io.GGUFError, match="longer than"):
        gguf_io.write(tmp_path / "a.gguf", {"n" * 64: q})
    with pytest.raises(gguf_io.GGUFError, match="cannot store a dict"):
        gguf_io.write(tmp_path / "a.gguf", {"x": q}, {"k": {}})
    with pytest.raises(gguf_io.GGUFError, match="share one format"):
        gguf_io.write(tmp_path / "a.gguf", {"x": [q, iq1q.quantize(np.ones((4, 256), np.float32), "iq1_m")]})
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left


def test_writer_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "w.gguf"
    path.write_bytes(b"old")
    specs = [gguf_io.TensorSpec("a", 0, (4, 8)), gguf_io.TensorSpec("b", 0, (8,))]
    with pytest.raises(RuntimeError):
        with gguf_io.Writer(path, specs) as w:
            w.write(np.zeros(32, np.float32))
            raise RuntimeError("stop")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["w.gguf"]
    w = gguf_io.Writer(path, specs)
    w.write(np.zeros(32, np.float32))
    with pytest.raises(gguf_io.GGUFError, match="'b' is incomplete"):
        w.close()
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    with gguf_io.Writer(path, specs) as w:
        w.write(np.arange(32, dtype=np.float32).tobytes())
        w.write(np.ones(8, np.float32))
    r = GGUFReader(path)
    assert [t.name for t in r.tensors] == ["a", "b"] and r.tensors[0].data[1, 0] == 8.0


def test_fast_array_parsing_reads_what_the_package_reads(tmp_path, rng):
    """The reader's fast path for arrays gives the values gguf's GGUFReader gives, key by key."""
    path = tmp_path / "arrays.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("toks", [f"t{i}" * (i % 5) for i in range(300)] + ["héllo"])
    w.add_key_value("scores", rng.standard_normal(200).tolist(), V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("types", list(range(-50, 100)), V.ARRAY, sub_type=V.INT32)
    w.add_key_value("u8", [1, 2, 250], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("flags", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("big", [2**63 + 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("one", ["x"], V.ARRAY, sub_type=V.STRING)
    w.add_string("s", "after the arrays")
    add(w, "x", np.ones((2, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()

    pkg, mine = GGUFReader(path), gguf_io.read(path)
    assert [k for k in pkg.fields if not k.startswith("GGUF.")] == list(mine.metadata)
    for k, meta in mine.metadata.items():
        want, got = pkg.fields[k].contents(), meta
        if isinstance(got, np.ndarray):
            assert got.dtype == np.dtype(GGUFReader.gguf_scalar_to_np[pkg.fields[k].types[-1]]), k
            got = got.tolist()
        assert got == want and type(got) is type(want), k
    assert mine.metadata["toks"][-1] == "héllo" and mine.data_offset == pkg.data_offset
    assert np.array_equal(mine.tensors["x"], np.ones((2, 32)))


@pytest.mark.parametrize("values,item", [
    (["a", "héllo", ""], V.STRING), ([b"\xff\x00", b"x"], V.STRING), ([1, 2, 3], V.INT32), ([0, 255], V.UINT8),
    ([0.1, 1e30, -2.5, 2], V.FLOAT32), ([0.1, 2.0], V.FLOAT64), ([True, False], V.BOOL), ([2**63 + 5], V.UINT64),
    ([-1, 7], V.INT64), ([-3, 3], V.INT16),
    # what struct refuses, the fast path must refuse too
    ([1, 2**40], V.INT32), ([300], V.UINT8), ([1e40], V.FLOAT32), ([1.5], V.INT32), ([-1], V.UINT32)])
def test_fast_array_packing_writes_the_packages_bytes(values, item):
    def packed(writer):
        try:
            return writer._pack_val(values, V.ARRAY, True, item)
        except Exception as e:  # struct.error, OverflowError, ValueError: the type names must agree
            return type(e).__name__
    assert packed(gguf_io._Writer(None, "x")) == packed(gguf.GGUFWriter(None, "x"))


@pytest.mark.parametrize("strings", [
    [], [""], ["a", "", "héllo", "日本", ""], [b"\xc3", b"\xa9"],  # a character cut in two: each is not UTF-8
    ["a\x00b", "c"], [b"\xff", "ok"], ["▁the"] * 1000])
def test_metadata_string_arrays_read_as_one_by_one(strings):
    """The vocabulary reader (spans natively, one decode of a NUL-separated blob) gives what
    decoding each string alone gives: str, or the bytes where a string is not UTF-8."""
    from iq1q import _ref

    raw = [s.encode() if isinstance(s, str) else s for s in strings]
    buf = np.frombuffer(b"".join(len(b).to_bytes(8, "little") + b for b in raw) + b"tail", np.uint8)
    starts, lengths = np.empty(len(raw), np.int64), np.empty(len(raw), np.int64)
    assert _ref.gguf_string_spans(buf, 0, len(raw), starts, lengths) == buf.size - 4
    assert gguf_io._decode_strings(buf, starts, lengths) == strings
    if raw:
        with pytest.raises(ValueError, match="ends past the end of the file"):
            _ref.gguf_string_spans(buf[:buf.size - 5], 0, len(raw), starts, lengths)
