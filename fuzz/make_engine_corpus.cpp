// Writes the seed corpora of fuzz_llama2c and fuzz_gguf: tiny valid files of each format and
// variant (shared/unshared classifier, F32/F16/BF16/Q8_0, v2/v3, with a vocabulary).
//   make_engine_corpus <fuzz/corpus dir>
#include <cstdio>
#include <string>

#include "minillama/writers.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_engine_corpus DIR (writes DIR/llama2c/* and DIR/gguf/*)\n");
    return 2;
  }
  const std::string dir = argv[1];
  using namespace minillama;
  config c;
  c.dim = 32;
  c.hidden_dim = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.vocab_size = 8;
  c.seq_len = 4;
  write_file(dir + "/llama2c/shared.bin", write_llama2c(make_random_model(c, 1)));
  c.shared_classifier = false;
  write_file(dir + "/llama2c/unshared.bin", write_llama2c(make_random_model(c, 2)));
  const tokenizer small({"<unk>", "<s>", "</s>", "a", "b", " ", "ab", " a"}, {0, 0, 0, -1, -2, -3, -4, -5});
  write_file(dir + "/llama2c/tokenizer.bin", write_llama2c_tokenizer(small));
  const model m = make_random_model(c, 3);
  int i = 0;
  for (ggml_type t : {ggml_type::f32, ggml_type::f16, ggml_type::bf16, ggml_type::q8_0}) {
    gguf_write_options o;
    o.matrix_type = t;
    o.version = i % 2 ? 2 : 3;
    write_file(dir + "/gguf/model" + std::to_string(i) + ".gguf", write_gguf(m, i == 0 ? &small : nullptr, o));
    ++i;
  }
  std::printf("wrote seeds under %s/llama2c and %s/gguf\n", dir.c_str(), dir.c_str());
  return 0;
}
