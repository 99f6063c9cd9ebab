# ggml-args.sh: the cmake options that shape ik's libggml.a, sourced by build.sh and
# build-tools.sh: one list, so that the tools can share build.sh's build folder.
GGML_ARGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=ON
    -DGGML_CUDA=OFF
    -DGGML_OPENMP=ON
    -DGGML_IQK_FLASH_ATTENTION=ON
    -DGGML_IQK_FA_ALL_QUANTS=OFF
    -DBUILD_SHARED_LIBS=OFF
)
