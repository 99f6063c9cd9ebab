"""The Cython shells check every buffer before native code touches it."""

import numpy as np
import pytest

from iq1q import _ref, format_info

S_R4, M_R4, Q8_0, Q8_K128 = (format_info(f).id for f in ("iq1_s_r4", "iq1_m_r4", "q8_0", "q8_k128"))


def gemm_args(N=8, K=256, M=2):
    w = np.zeros(N * format_info("iq1_s_r4").row_size(K), np.uint8)
    a = np.zeros(M * format_info("q8_k128").row_size(K), np.uint8)
    return w, a, np.zeros((M, N), np.float32), K


def test_gemm_accepts_good_buffers():
    w, a, y, K = gemm_args()
    _ref.gemm(S_R4, Q8_K128, w, a, y, K, 2)
    assert not y.any()


@pytest.mark.parametrize("change,message", [
    (dict(w=np.zeros(10, np.uint8)), "must be 400 bytes, got 10"),
    (dict(a=np.zeros(559, np.uint8)), "q8_k128 data of 2 x 256 must be 560 bytes, got 559"),
    (dict(K=128), "must be 208 bytes, got 400"),
    (dict(K=96), "K = 96 is not a positive multiple of 128"),
    (dict(threads=0), "threads must be at least 1, got 0"),
    (dict(wfmt=Q8_0), "gemm takes a weight and an activation format"),
    (dict(afmt=M_R4), "gemm takes a weight and an activation format"),
    (dict(afmt=99), "unknown format id 99"),
    (dict(y=np.zeros((2, 7), np.float32)), "needs a multiple of 4 rows, got 7"),
    (dict(y=np.zeros((3, 8), np.float32)), "must be 840 bytes, got 560"),
])
def test_gemm_rejects_bad_buffers(change, message):
    w, a, y, K = gemm_args()
    args = dict(wfmt=S_R4, afmt=Q8_K128, w=w, a=a, y=y, K=K, threads=1) | change
    with pytest.raises(ValueError, match=message):
        _ref.gemm(args["wfmt"], args["afmt"], args["w"], args["a"], args["y"], args["K"],
                  args["threads"])


def test_gemm_rejects_wrong_dtypes():
    w, a, y, K = gemm_args()
    with pytest.raises(ValueError, match="Buffer dtype mismatch"):
        _ref.gemm(S_R4, Q8_K128, w, a, y.astype(np.float64), K, 1)
    with pytest.raises(ValueError, match="ndarray is not C-contiguous"):
        _ref.gemm(S_R4, Q8_K128, w, a, np.zeros((8, 2), np.float32).T, K, 1)


def test_quantize_and_dequantize_check_sizes():
    x = np.zeros((4, 256), np.float32)
    with pytest.raises(ValueError, match="must be 200 bytes, got 199"):
        _ref.quantize_weights(format_info("iq1_s").id, x, np.zeros(199, np.uint8), None, 1)  # iq1_s
    with pytest.raises(ValueError, match="imatrix has 128 entries, rows have 256"):
        _ref.quantize_weights(S_R4, x, np.zeros(200, np.uint8), np.ones(128, np.float32), 1)
    with pytest.raises(ValueError, match="q8_0 is not a weight format"):
        _ref.quantize_weights(Q8_0, x, np.zeros(4 * 272, np.uint8), None, 1)
    with pytest.raises(ValueError, match="must be 136 bytes, got 10"):
        _ref.dequantize(Q8_0, np.zeros(10, np.uint8), np.zeros((1, 128), np.float32), 1)
    with pytest.raises(ValueError, match="iq1_s_r4 is not an activation format"):
        _ref.quantize_activations(S_R4, x, np.zeros(200, np.uint8), 1)
