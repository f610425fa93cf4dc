// libFuzzer target for the strict profile CSV reader: any input either throws depthkv::error
// or yields a profile that writes and reads back equal (and writes identically twice).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const bool allow_missing : {false, true}) {
    depthkv::sensitivity_profile p;
    try {
      std::istringstream is(text);
      p = depthkv::read_profile(is, depthkv::profile_read_options{allow_missing});
    } catch (const depthkv::error&) {
      continue;  // rejected input: fine
    }
    std::ostringstream os;
    depthkv::write_profile(os, p);  // must not throw for a profile the reader accepted
    std::istringstream again(os.str());
    const auto q = depthkv::read_profile(again, depthkv::profile_read_options{allow_missing});
    if (!(q == p)) std::abort();
    std::ostringstream os2;
    depthkv::write_profile(os2, q);
    if (os2.str() != os.str()) std::abort();
    // Accepted complete profiles must drive every curve evaluation and the curve allocator.
    if (p.complete() && p.n_layers() <= 64) {
      for (std::size_t l = 0; l < p.n_layers(); ++l)
        for (const double r : {0.0, 0.05, 0.5, 1.0}) (void)p.delta_at(l, r);
      depthkv::allocation_request req;
      req.lengths.assign(p.n_layers(), 37);
      req.minimums = {5};
      req.budget = depthkv::global_budget::ratio(0.3);
      for (const auto name : depthkv::allocator_names) {
        std::vector<std::size_t> c;
        try {
          c = depthkv::allocate(name, req, p);
        } catch (const depthkv::error&) {
          continue;  // extreme curves (non-finite extrapolation) are refused with an error
        }
        std::size_t s = 0;
        for (std::size_t l = 0; l < c.size(); ++l) {
          if (c[l] < 5 || c[l] > 37) std::abort();
          s += c[l];
        }
        if (c.size() != p.n_layers() || s != depthkv::resolve(req).budget) std::abort();
      }
    }
  }
  return 0;
}
