// Built with the AVX2/AVX-512 flags switched off (tests/CMakeLists.txt) and linked into
// test_isa_mix next to a -march=native translation unit: both instantiate kv_cache<float> and
// run a retain through the compaction kernels of their own ISA.
#include <string>
#include <typeinfo>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "isa_mix.hpp"

namespace isa_mix {

tu_result run_generic() { return run_here(); }

}  // namespace isa_mix
