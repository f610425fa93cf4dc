// Two translation units built with different ISA flags (this one -march=native, isa_mix/
// generic_tu.cpp without AVX2/AVX-512) both use kv_cache<float>: each must get its own type and
// kernels (distinct symbols), not one ISA's copy picked by the linker for both (an ODR violation
// that would run AVX-512 code in a TU built for machines without it).
#include <cstring>
#include <string>

#include "catch.hpp"
#include "isa_mix/isa_mix.hpp"

TEST_CASE("isa mix: translation units with different -m flags get distinct kv_cache types", "[cache][odr]") {
  const isa_mix::tu_result native = isa_mix::run_here();
  const isa_mix::tu_result generic = isa_mix::run_generic();
  INFO("native type " << native.cache_type << ", generic type " << generic.cache_type);
  CHECK(generic.best == depthkv::isa::scalar);
  CHECK(generic.cache_type.find("target_generic") != std::string::npos);
  if (native.best != depthkv::isa::scalar) {
    CHECK(native.cache_type != generic.cache_type);
    CHECK(native.cache_type.find(native.best == depthkv::isa::avx512 ? "target_avx512" : "target_avx2") !=
          std::string::npos);
  }
  // both retained rows 1, 3, 4 (positions 11, 13, 14) with their own kernels
  for (const auto* r : {&native, &generic}) {
    REQUIRE(r->positions == std::vector<depthkv::pos_t>{11, 13, 14});
    REQUIRE(r->keys.size() == 3 * 64);
    const std::size_t src[3] = {1, 3, 4};
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t d = 0; d < 64; ++d) CHECK(r->keys[i * 64 + d] == static_cast<float>(src[i] * 64 + d));
  }
}
