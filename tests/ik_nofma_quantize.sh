#!/usr/bin/env bash
# ik_llama.cpp's llama-quantize with its weight quantizers compiled -ffp-contract=off (docs/spec.md §1.6),
# next to the regular build that benchmarks/ikbench/build-tools.sh makes (under a minute on 2 cores).
# The tests compare iq1q with it byte for byte; against the regular (FMA-contracted) build
# they allow the few bytes FMA rounding changes. Output: $IQ1Q_IKBUILD/nofma/llama-quantize
# (IQ1Q_IKBUILD: the harness's build folder, default benchmarks/ikbench/build).
set -euo pipefail
HARNESS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../benchmarks/ikbench" && pwd)"
IKBUILD="${IQ1Q_IKBUILD:-$HARNESS/build}"
# absolute: the compiles below run in $IKBUILD/nofma
if [ -d "$IKBUILD" ]; then IKBUILD="$(cd "$IKBUILD" && pwd)"; fi
B="$IKBUILD/$(cat "$IKBUILD/tools-build-dir.txt" 2>/dev/null || echo build)"
S="$IKBUILD/src/ggml/src"
[ -x "$B/bin/llama-quantize" ] || { echo "build ik's tools first: benchmarks/ikbench/build-tools.sh (in $IKBUILD)" >&2; exit 2; }
OUT="$IKBUILD/nofma"
mkdir -p "$OUT" && cd "$OUT"
# the same defines and flags as ggml's own objects (build/ggml/src/CMakeFiles/ggml.dir/flags.make)
DEF="-DGGML_EXPERT_CHUNKING -DGGML_IQK_FLASH_ATTENTION -DGGML_SCHED_MAX_COPIES=1 -DGGML_USE_IQK_MULMAT
     -DGGML_USE_OPENMP -DNDEBUG -D_GNU_SOURCE -D_XOPEN_SOURCE=600"
INC="-I$S/../include -I$S"
cc $DEF $INC -O3 -std=gnu11 -march=native -fopenmp -ffp-contract=off -c "$S/ggml-quants.c" -o ggml-quants.c.o
c++ $DEF $INC -O3 -std=gnu++20 -march=native -fopenmp -ffp-contract=off -c "$S/iqk/iqk_quantize.cpp" -o iqk_quantize.cpp.o
cp "$B/ggml/src/libggml.a" libggml.a
ar r libggml.a ggml-quants.c.o iqk_quantize.cpp.o  # replace the two members
c++ -O3 "$B/examples/quantize/CMakeFiles/llama-quantize.dir/quantize.cpp.o" -o llama-quantize \
    "$B/src/libllama.a" "$B/common/libcommon.a" "$B/src/libllama.a" ./libggml.a -fopenmp -lpthread -lm
echo "built $OUT/llama-quantize"
