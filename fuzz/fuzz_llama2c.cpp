// libFuzzer target: the llama2.c checkpoint and tokenizer loaders on arbitrary bytes.
// Any input must either load or throw minillama::load_error / depthkv::error: never crash,
// never read out of bounds (run with -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>

#include "minillama/loaders.hpp"
#include "minillama/session.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const minillama::bytes_view b(data, size);
  try {
    const minillama::model m = minillama::load_llama2c(b, "fuzz.bin");
    // A model that loads must run: one token through it (tiny models only, to stay fast).
    if (m.weight_bytes() < (1u << 20)) {
      minillama::session s(m);
      s.decode(0);
    }
  } catch (const depthkv::error&) {
  }
  try {
    const minillama::tokenizer t = minillama::load_llama2c_tokenizer(b, 0, "fuzz_tok.bin");
    const auto ids = t.encode("hello fuzz \xC3\xA9", true);
    (void)t.decode(depthkv::span<const int>(ids.data(), ids.size()));
  } catch (const depthkv::error&) {
  }
  return 0;
}
