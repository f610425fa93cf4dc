// Built with -mavx2 -mfma -mf16c (tests/CMakeLists.txt).
#include "body.hpp"

isa_link::result isa_link::run_avx2_tu() { return run_body(); }
