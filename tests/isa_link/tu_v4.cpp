// Built with -march=x86-64-v4 (tests/CMakeLists.txt): flags above the AVX2 path.
#include "body.hpp"

isa_link::result isa_link::run_v4_tu() { return run_body(); }
