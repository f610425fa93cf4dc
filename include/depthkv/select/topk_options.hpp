// Options and reusable working memory of depthkv::topk:
//   topk_options {n_sink, n_recent}: positions always kept (they count toward k);
//   topk_scratch: grow-only scratch, one per thread, allocation-free once grown.
#pragma once

#include "depthkv/select/detail/topk_types.hpp"
