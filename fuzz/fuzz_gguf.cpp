// libFuzzer target: the GGUF loader on arbitrary bytes. Any input must either load or throw
// minillama::load_error / depthkv::error: never crash, never read out of bounds.
#include <cstddef>
#include <cstdint>

#include "minillama/loaders.hpp"
#include "minillama/session.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const minillama::gguf_model g = minillama::load_gguf(minillama::bytes_view(data, size), "fuzz.gguf");
    if (g.weights.weight_bytes() < (1u << 20)) {
      minillama::session s(g.weights);
      s.decode(0);
    }
    if (g.has_vocab) {
      const auto ids = g.vocab.encode("hello fuzz", true);
      (void)g.vocab.decode(depthkv::span<const int>(ids.data(), ids.size()));
    }
  } catch (const depthkv::error&) {
  }
  return 0;
}
