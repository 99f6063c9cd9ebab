"""Worked examples of SPEC section 11, built from the SPEC's own numbers."""

import numpy as np

# SPEC 11.2: one IQ1_S_R4 group, 4 rows x 128 (header, then per block qs[16] qh[4])
IQ1_S_R4_GROUP = bytes.fromhex(
    "0038003c00340040"
    "05060b101e23282d3b40454a585d6267" "04009294 2429b6bd".replace(" ", "")
    + "84898e93a1a6abb0bec3c8cddbe0e5ea" "00909224 24b9b64d".replace(" ", "")
    + "070c111624292e3341464b505e63686d" "4922dbb66d4bffdf"
    + "8a8f9499a7acb1b6c4c9ced3e1e6ebf0" "49b2db466ddbff6f"
)
IQ1_S_R4_EXACT = [36.936270964, -32.903052321, -6.477731524, 524.300215010]

# SPEC 11.3: one IQ1_M_R4 group (header, then per block qs[16] qh[8] scales[4])
IQ1_M_R4_GROUP = bytes.fromhex(
    "0038003c00340040"
    "03050d9232b73cc161e66bf090159a1f" "0814b34c802933d4" "507192b3"
    "d65be065058a0f9434b93ec363e86df2" "10a24b551922c45d" "6384a5c6"
    "a92eb338d85de267078c119636bb40c5" "913b44e622b35d66" "7697b8d9"
    "7c01860bab30b53ada5fe469098e1398" "2a44d57fb24c65f7" "89aacbec"
)
IQ1_M_R4_EXACT = [53.865774503, -122.271165652, 32.823389424, 225.277566858]

# SPEC 11.4: finite q8_k128 results for the overflowing activation
IQ1_S_R4_OVERFLOW_K128 = [188188.984, -49763.8008, 78661.4141, -1790236.12]


def activation_11_1() -> np.ndarray:
    j = np.arange(128)
    x = (((37 * j) % 29) - 14) / 4
    x[5] = 9.25
    return x.astype(np.float32)


def activation_11_4() -> np.ndarray:
    x = activation_11_1()
    x[0], x[1:32], x[32], x[33:64] = 80000, 4000, -80000, -4000
    return x
