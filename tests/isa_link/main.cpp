// The isa_link test program (no -m flags), linked with the two TUs in one order or the other:
// both TUs must dispatch to the same path and compute the same results. The -march=x86-64-v4
// TU is only run on a CPU that has x86-64-v4 (its own code may use AVX-512 anywhere).
// Prints "isa_link: OK ..." or exits 1.
#include <cstdio>
#include <cstring>
#include <typeinfo>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/isa.hpp"
#include "isa_link.hpp"

std::uint64_t isa_link::mix(std::uint64_t h, std::uint64_t v) { return (h ^ v) * 1099511628211ull; }

int main() {
  const bool v4 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                  depthkv::isa_supported(depthkv::isa::avx512);
  const isa_link::result a = isa_link::run_avx2_tu();
  std::printf("isa_link: avx2 TU ran on %s, checksum %016llx\n", depthkv::isa_name(static_cast<depthkv::isa>(a.active)),
              static_cast<unsigned long long>(a.checksum));
  if (std::strcmp(a.cache_type, typeid(depthkv::kv_cache<float>).name()) != 0) {
    std::printf("isa_link: FAILED: kv_cache<float> is another type in the avx2 TU (%s)\n", a.cache_type);
    return 1;
  }
  if (a.active != static_cast<int>(depthkv::active_isa())) {
    std::printf("isa_link: FAILED: the avx2 TU dispatched to another path than active_isa()\n");
    return 1;
  }
  if (!v4) {
    std::printf("isa_link: OK (the x86-64-v4 TU was not run: this CPU lacks AVX-512)\n");
    return 0;
  }
  const isa_link::result b = isa_link::run_v4_tu();
  std::printf("isa_link: v4 TU ran on %s, checksum %016llx\n", depthkv::isa_name(static_cast<depthkv::isa>(b.active)),
              static_cast<unsigned long long>(b.checksum));
  if (a.active != b.active || a.checksum != b.checksum || std::strcmp(a.cache_type, b.cache_type) != 0) {
    std::printf("isa_link: FAILED: the TUs differ\n");
    return 1;
  }
  // The same with the portable and AVX2 paths forced: results agree across TUs on each path.
  for (depthkv::isa p : {depthkv::isa::scalar, depthkv::isa::avx2}) {
    const depthkv::scoped_isa use(p);
    const isa_link::result x = isa_link::run_avx2_tu(), y = isa_link::run_v4_tu();
    if (x.checksum != y.checksum || x.active != y.active || x.active != static_cast<int>(p)) {
      std::printf("isa_link: FAILED on forced path %s\n", depthkv::isa_name(p));
      return 1;
    }
  }
  std::printf("isa_link: OK (both TUs, paths avx512/avx2/scalar)\n");
  return 0;
}
