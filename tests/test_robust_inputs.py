"""Inputs from memory maps and views of larger buffers: they work, and nothing past the
view is read. (Strided, reversed, read-only and misaligned arrays: test_fuzz.py.)"""

import numpy as np

import iq1q


def test_memory_mapped_inputs(tmp_path, rng):
    w = rng.standard_normal((32, 512)).astype(np.float32)
    x = rng.standard_normal((5, 512)).astype(np.float32)
    w.tofile(tmp_path / "w.f32")
    x.tofile(tmp_path / "x.f32")
    wm = np.memmap(tmp_path / "w.f32", dtype=np.float32, mode="r", shape=w.shape)
    xm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=x.shape)
    W = iq1q.quantize(wm, "iq1_m_r4")
    assert W.tobytes() == iq1q.quantize(w, "iq1_m_r4").tobytes()
    assert iq1q.quantize_activations(xm, "q8_k").tobytes() == iq1q.quantize_activations(x, "q8_k").tobytes()
    np.testing.assert_array_equal(iq1q.matmul(xm, W), iq1q.matmul(x, W))
    wbytes = tmp_path / "w.iq1"
    wbytes.write_bytes(W.tobytes())
    mapped = np.memmap(wbytes, dtype=np.uint8, mode="r")
    assert iq1q.QuantizedTensor.from_bytes(mapped, "iq1_m_r4", W.shape).tobytes() == W.tobytes()


def test_views_of_larger_buffers_are_read_to_their_end_only(rng):
    W = iq1q.quantize(rng.standard_normal((8, 256)).astype(np.float32), "iq1_s")
    raw = W.tobytes()
    # the tensor's bytes sit in the middle of a larger buffer, one byte off alignment
    buf = bytearray(b"\xff" * 7 + raw + b"\xff" * 9)
    view = memoryview(buf)[7:7 + len(raw)]
    t = iq1q.QuantizedTensor.from_bytes(view, "iq1_s", (8, 256))
    buf[7:7 + len(raw)] = bytes(len(raw))  # later writes to the buffer do not reach the tensor
    assert t.tobytes() == raw
    np.testing.assert_array_equal(t.dequantize(), W.dequantize())
    arr = np.frombuffer(bytes(buf[:7]) + raw + bytes(9), dtype=np.uint8)[7:7 + len(raw)]
    assert iq1q.QuantizedTensor.from_bytes(arr, "iq1_s", (8, 256)).tobytes() == raw
    # activations likewise
    qa = iq1q.quantize_activations(rng.standard_normal((3, 256)).astype(np.float32), "q8_1")
    abuf = bytearray(b"\x7f" * 3 + qa.tobytes() + b"\x7f" * 5)
    got = iq1q.QuantizedActivations.from_bytes(memoryview(abuf)[3:3 + qa.nbytes], "q8_1", (3, 256))
    np.testing.assert_array_equal(iq1q.matmul(got, W, overflow="ignore"), iq1q.matmul(qa, W, overflow="ignore"))
