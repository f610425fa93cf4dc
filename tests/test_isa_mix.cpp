// Two translation units built with different ISA flags (this one with the project's flags,
// isa_mix/generic_tu.cpp without AVX2/AVX-512) both use kv_cache<float>: the type is the same
// in both (ISA-neutral: a cache can cross TUs), and both dispatch to the same run-time path.
#include <cstring>
#include <string>

#include "catch.hpp"
#include "isa_mix/isa_mix.hpp"

TEST_CASE("isa mix: translation units with different -m flags share kv_cache and the dispatched path", "[cache][odr]") {
  const isa_mix::tu_result here = isa_mix::run_here();
  const isa_mix::tu_result generic = isa_mix::run_generic();
  INFO("type here " << here.cache_type << ", generic " << generic.cache_type);
  CHECK(here.cache_type == generic.cache_type);
  CHECK(here.active == generic.active);
  CHECK(here.active == depthkv::active_isa());
  // both retained rows 1, 3, 4 (positions 11, 13, 14)
  for (const auto* r : {&here, &generic}) {
    REQUIRE(r->positions == std::vector<depthkv::pos_t>{11, 13, 14});
    REQUIRE(r->keys.size() == 3 * 64);
    const std::size_t src[3] = {1, 3, 4};
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t d = 0; d < 64; ++d) CHECK(r->keys[i * 64 + d] == static_cast<float>(src[i] * 64 + d));
  }
}
