// Umbrella header: includes every public depthkv header.
#pragma once

#include "depthkv/version.hpp"
#include "depthkv/config.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

// view/: non-owning views over engine memory (the bottom layer: select/, score/, cache/ use it)
#include "depthkv/view/shape.hpp"
#include "depthkv/view/rows_view.hpp"
#include "depthkv/view/kv_view.hpp"
#include "depthkv/view/positions.hpp"
#include "depthkv/view/layer_view.hpp"
#include "depthkv/view/strided_rows.hpp"
#include "depthkv/view/paged.hpp"

// cache/: the owning cache
#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/cache/block_allocator.hpp"
#include "depthkv/cache/paged_cache.hpp"

// select/
#include "depthkv/select/topk_options.hpp"
#include "depthkv/select/topk.hpp"
#include "depthkv/select/compact.hpp"

// score/
#include "depthkv/score/window.hpp"
#include "depthkv/score/pooling.hpp"
#include "depthkv/score/policies.hpp"

// budget/
#include "depthkv/budget/profile.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/paged_budget.hpp"
#include "depthkv/budget/profiler.hpp"

// pipeline
#include "depthkv/prune.hpp"
#include "depthkv/prune_paged.hpp"
#include "depthkv/decode.hpp"
