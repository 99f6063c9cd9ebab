"""Format facts against docs/spec.md §2 and §4 and gguf's own table."""

import gguf
import pytest

import iq1q

# (ggml type, block, bytes per block, row meta, rows per group) as docs/spec.md §2 and §4.9 state them
SPEC = {
    "iq1_s": (19, 256, 50, 0, 1),
    "iq1_m": (29, 256, 56, 0, 1),
    "iq1_s_r4": (219, 32, 6, 2, 4),
    "iq1_m_r4": (229, 32, 7, 2, 4),
    "q8_0": (8, 32, 34, 0, 1),
    "q8_1": (9, 32, 36, 0, 1),
    "q8_k": (15, 256, 296, 0, 1),
    "q8_k128": (150, 128, 140, 0, 1),
}


def test_format_lists():
    assert iq1q.WEIGHT_FORMATS == ("iq1_s", "iq1_m", "iq1_s_r4", "iq1_m_r4")
    assert iq1q.ACTIVATION_FORMATS == ("q8_0", "q8_1", "q8_k", "q8_k128")


@pytest.mark.parametrize("name", SPEC)
def test_format_info_matches_spec(name):
    f = iq1q.format_info(name)
    assert (f.ggml_type, f.block_size, f.type_size, f.row_meta_size, f.rows_per_group) == SPEC[name]
    assert f.name == name


@pytest.mark.parametrize("name", ["iq1_s", "iq1_m", "q8_0"])
def test_sizes_agree_with_gguf(name):
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name.upper()]]
    f = iq1q.format_info(name)
    assert (f.block_size, f.type_size) == (block, size)
    assert f.ggml_type == int(gguf.GGMLQuantizationType[name.upper()])


@pytest.mark.parametrize("name,n,size,bpw", [
    ("iq1_s", 7168, 1400, 1.5625), ("iq1_m", 4096, 896, 1.75),
    ("iq1_s_r4", 7168, 2 + 6 * 7168 // 32, 1.5), ("iq1_m_r4", 128, 2 + 28, 1.75),
    ("q8_0", 64, 68, 8.5), ("q8_1", 64, 72, 9.0), ("q8_k", 512, 592, 9.25), ("q8_k128", 256, 280, 8.75),
])
def test_row_size_and_bits(name, n, size, bpw):
    f = iq1q.format_info(name)
    assert f.row_size(n) == size
    assert f.bits_per_weight == bpw


def test_row_size_rejects_partial_blocks():
    with pytest.raises(ValueError, match="multiple of iq1_s's block of 256"):
        iq1q.format_info("iq1_s").row_size(300)


def test_unknown_format_lists_choices():
    with pytest.raises(ValueError, match="unknown format 'iq2_xs'.*iq1_s, iq1_m, iq1_s_r4"):
        iq1q.format_info("iq2_xs")
