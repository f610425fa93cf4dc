// Run-time path selection: detection, the DEPTHKV_ISA cap (ctest runs this binary again with
// DEPTHKV_ISA set, and DEPTHKV_TEST_ISA_CAP naming the cap it set), set_isa / scoped_isa, and
// every kernel entry following the active path.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "depthkv/isa.hpp"
#include "depthkv/select/topk.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;

namespace {
// The path the first use must pick: the detected one, capped by the cap the test was run with.
isa expected_initial() {
  const char* cap = std::getenv("DEPTHKV_TEST_ISA_CAP");
  const isa best = detected_isa();
  if (cap == nullptr) return best;
  isa c = best;
  if (std::strcmp(cap, "scalar") == 0) c = isa::scalar;
  if (std::strcmp(cap, "avx2") == 0) c = isa::avx2;
  if (std::strcmp(cap, "avx512") == 0) c = isa::avx512;
  return static_cast<int>(c) < static_cast<int>(best) ? c : best;
}
}  // namespace

TEST_CASE("isa: the first use picks the detected path, capped by DEPTHKV_ISA", "[isa]") {
  INFO("detected " << isa_name(detected_isa()) << ", DEPTHKV_ISA "
                   << (std::getenv("DEPTHKV_ISA") ? std::getenv("DEPTHKV_ISA") : "(unset)"));
  CHECK(active_isa() == expected_initial());
  CHECK(isa_supported(isa::scalar));
  CHECK(isa_supported(detected_isa()));
  CHECK(isa_compiled(isa::scalar));
#if defined(__x86_64__) && !defined(DEPTHKV_PORTABLE_ONLY)
  CHECK(isa_compiled(isa::avx2));
  CHECK(isa_compiled(isa::avx512));
  // What the CPU reports, independently of the library's own cpuid code.
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  CHECK(isa_supported(isa::avx2) == avx2);
  if (!avx512) CHECK_FALSE(isa_supported(isa::avx512));
#endif
}

TEST_CASE("isa: set_isa and scoped_isa force a path and restore it", "[isa]") {
  const isa before = active_isa();
  for (isa p : depthkv_test::supported_paths()) {
    {
      const scoped_isa use(p);
      CHECK(active_isa() == p);
    }
    CHECK(active_isa() == before);
  }
  for (isa p : {isa::avx2, isa::avx512})
    if (!isa_supported(p)) {
      require_error([&] { set_isa(p); }, {"depthkv::set_isa", isa_name(p), "not"});
      require_error([&] { scoped_isa use(p); }, {"depthkv::set_isa"});
      CHECK(active_isa() == before);
    }
  set_isa(isa::scalar);
  CHECK(active_isa() == isa::scalar);
  set_isa(before);
  CHECK(active_isa() == before);
}

TEST_CASE("isa: every supported path gives the same top-k", "[isa]") {
  std::vector<float> s(10000);
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<float>((i * 7919) % 1013);
  std::vector<index_t> want(500), got(500);
  {
    const scoped_isa use(isa::scalar);
    topk(s, 500, want);
  }
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    std::fill(got.begin(), got.end(), 0u);
    topk(s, 500, got);
    CHECK(got == want);
  }
}
