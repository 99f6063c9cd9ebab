// Token ids and logits from ik_llama.cpp's libllama, for iq1q's test fixtures.
// usage: oracle MODEL TEXT_OR_IDS OUT_PREFIX KV(f16|f32) FA(0|1) MAXTOK [tokens_only | mla=N]  (a .ids file: int32 token ids;
//        mla=N: ik's MLA mode for deepseek2, 0 = attention over attn_kv_b's keys and values as they are)
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <fstream>
#include <sstream>
int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage\n"); return 2; }
    std::ifstream in(argv[2], std::ios::binary); std::stringstream ss; ss << in.rdbuf(); std::string text = ss.str();
    std::string out = argv[3]; bool f32 = std::string(argv[4]) == "f32"; bool fa = atoi(argv[5]); int maxtok = atoi(argv[6]);
    std::string opt = argc > 7 ? argv[7] : "";
    bool tokens_only = argc > 7 && opt.rfind("mla=", 0) != 0;
    int mla = opt.rfind("mla=", 0) == 0 ? atoi(opt.c_str() + 4) : -1;
    llama_backend_init();
    auto mp = llama_model_default_params();
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    std::vector<llama_token> toks(text.size() + 16);
    int n;
    if (std::string(argv[2]).size() > 4 && std::string(argv[2]).substr(std::string(argv[2]).size() - 4) == ".ids") {
        n = (int)(text.size() / 4); toks.resize(n); memcpy(toks.data(), text.data(), 4 * n);  // int32 ids as given
    } else {
        n = llama_tokenize(model, text.data(), (int)text.size(), toks.data(), (int)toks.size(), true, false);
        if (n < 0) return 3;
    }
    toks.resize(n);
    if (maxtok > 0 && n > maxtok) { toks.resize(maxtok); n = maxtok; }
    FILE *f = fopen((out + ".tokens").c_str(), "wb"); fwrite(toks.data(), 4, n, f); fclose(f);
    fprintf(stderr, "tokens: %d\n", n);
    if (tokens_only) return 0;
    auto cp = llama_context_default_params();
    cp.n_ctx = n; cp.n_batch = n; cp.n_ubatch = n; cp.n_threads = 1; cp.n_threads_batch = 1;
    cp.flash_attn = fa; cp.logits_all = true;
    if (mla >= 0) cp.mla_attn = mla;
    if (f32) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; }
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 4;
    llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) { b.token[i] = toks[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1; }
    b.n_tokens = n;
    if (llama_decode(ctx, b)) return 5;
    int nv = llama_n_vocab(model);
    f = fopen((out + ".logits").c_str(), "wb");
    for (int i = 0; i < n; ++i) fwrite(llama_get_logits_ith(ctx, i), 4, nv, f);
    fclose(f);
    fprintf(stderr, "vocab %d\n", nv);
    return 0;
}
