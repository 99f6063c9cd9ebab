"""Worked examples of docs/spec.md §11, built from the spec's own numbers (one place for them)."""

import numpy as np

# docs/spec.md §11.1: the Q8_K128 block of activation_11_1() (d, bsums[4], q[128])
Q8_K128_11_1 = bytes.fromhex(
    "552a953d" "4b00" "f2ff" "2300" "eeff"
    "d0eb0722da7f112de5001bd3ef0a26def91530e8031fd7f20e29e1fd18d0eb0722daf6112de5001bd3ef0a26def9"
    "1530e8031fd7f20e29e1fd18d0eb0722daf6"
    "112de5001bd3ef0a26def91530e8031fd7f20e29e1fd18d0eb0722daf6112de5001bd3ef0a26def91530e8031fd7"
    "f20e29e1fd18d0eb0722daf6112de5001bd3"
)

# docs/spec.md §11.2: one IQ1_S_R4 group, 4 rows x 128 (header, then per block qs[16] qh[4])
IQ1_S_R4_GROUP = bytes.fromhex(
    "0038003c00340040"
    "05060b101e23282d3b40454a585d6267" "04009294" "2429b6bd"
    "84898e93a1a6abb0bec3c8cddbe0e5ea" "00909224" "24b9b64d"
    "070c111624292e3341464b505e63686d" "4922dbb6" "6d4bffdf"
    "8a8f9499a7acb1b6c4c9ced3e1e6ebf0" "49b2db46" "6ddbff6f"
)
IQ1_S_R4_EXACT = (36.936270964, -32.903052321, -6.477731524, 524.300215010)

# docs/spec.md §11.3: one IQ1_M_R4 group (header, then per block qs[16] qh[8] scales[4])
IQ1_M_R4_GROUP = bytes.fromhex(
    "0038003c00340040"
    "03050d9232b73cc161e66bf090159a1f" "0814b34c802933d4" "507192b3"
    "d65be065058a0f9434b93ec363e86df2" "10a24b551922c45d" "6384a5c6"
    "a92eb338d85de267078c119636bb40c5" "913b44e622b35d66" "7697b8d9"
    "7c01860bab30b53ada5fe469098e1398" "2a44d57fb24c65f7" "89aacbec"
)
IQ1_M_R4_EXACT = (53.865774503, -122.271165652, 32.823389424, 225.277566858)

# docs/spec.md §11.4: ik_llama's finite q8_k128 results for activation_11_4() on the 11.2 group
IQ1_S_R4_OVERFLOW_K128 = (188188.984, -49763.8008, 78661.4141, -1790236.12)


def activation_11_1() -> np.ndarray:
    """x_j = ((37 j mod 29) - 14) / 4, except x_5 = 9.25 (128 float32 values)."""
    j = np.arange(128)
    x = (((37 * j) % 29) - 14) / 4
    x[5] = 9.25
    return x.astype(np.float32)


def activation_11_4() -> np.ndarray:
    """11.1 with x_0 = 80000, x_1..31 = 4000, x_32 = -80000, x_33..63 = -4000."""
    x = activation_11_1()
    x[0], x[1:32], x[32], x[33:64] = 80000, 4000, -80000, -4000
    return x


def q8_k128_11_4() -> bytes:
    """docs/spec.md §11.4's q8_k128 block: d = 80000/127, bsums (313, -313, 0, 0), q = 127, 6 x31, -127, -6 x31, 0 x64."""
    q = np.array([127] + [6] * 31 + [-127] + [-6] * 31 + [0] * 64, np.int8)
    return bytes.fromhex("f67a1d44") + np.array([313, -313, 0, 0], "<i2").tobytes() + q.tobytes()
