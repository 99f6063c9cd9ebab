/* ref.h: the portable scalar reference backend (no intrinsics).
 *
 * Every other kernel set is checked against this one. Compiled at baseline
 * flags with -ffp-contract=off so the quantizers are strict float32 (docs/spec.md §1.6).
 */
#ifndef IQ1Q_REF_H
#define IQ1Q_REF_H

#include "iq1q_common.h"
#include "iq1q_grid.h"
#include "ref_quantize.h"     /* weight quantizers (docs/spec.md §8) */
#include "ref_dequantize.h"   /* weight dequantizers (docs/spec.md §6) */
#include "ref_activations.h"  /* q8_0, q8_1, q8_k, q8_k128 (docs/spec.md §5) */
#include "ref_gemm.h"         /* the 16 (weight, activation) kernels (docs/spec.md §7) */
#include "ref_gptq.h"         /* Hessian-aware weight quantization (docs/quantizer.md) */

/* Indexed by iq1q_format (weights first, then activations). */
static const iq1q_weight_quantize_fn iq1q_ref_weight_quantizers[IQ1Q_NUM_WEIGHT_FORMATS] = {
    iq1q_ref_quantize_iq1_s, iq1q_ref_quantize_iq1_m,
    iq1q_ref_quantize_iq1_s_r4, iq1q_ref_quantize_iq1_m_r4,
};
static const iq1q_act_quantize_fn iq1q_ref_act_quantizers[IQ1Q_NUM_ACTIVATION_FORMATS] = {
    iq1q_ref_quantize_q8_0, iq1q_ref_quantize_q8_1,
    iq1q_ref_quantize_q8_k, iq1q_ref_quantize_q8_k128,
};
static const iq1q_dequantize_fn iq1q_ref_dequantizers[IQ1Q_NUM_FORMATS] = {
    iq1q_ref_dequantize_iq1_s, iq1q_ref_dequantize_iq1_m,
    iq1q_ref_dequantize_iq1_s_r4, iq1q_ref_dequantize_iq1_m_r4,
    iq1q_ref_dequantize_q8_0, iq1q_ref_dequantize_q8_1,
    iq1q_ref_dequantize_q8_k, iq1q_ref_dequantize_q8_k128,
};

#endif /* IQ1Q_REF_H */
