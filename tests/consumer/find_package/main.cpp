// A tiny engine-side program: include the umbrella header, fill a cache, prune a layer.
#include <depthkv/depthkv.hpp>

#include <cstdio>
#include <vector>

int main() {
  depthkv::kv_cache<float> cache(depthkv::layers{2}, depthkv::heads{2}, depthkv::dim{4}, 8);
  std::vector<float> k(2 * 8 * 4), v(2 * 8 * 4);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = v[i] = static_cast<float>(i);
  auto kv = depthkv::kv_view<const float>::hnd(k.data(), depthkv::kv_shape(depthkv::heads{2}, depthkv::tokens{8}, depthkv::dim{4}));
  auto vv = depthkv::kv_view<const float>::hnd(v.data(), depthkv::kv_shape(depthkv::heads{2}, depthkv::tokens{8}, depthkv::dim{4}));
  cache.append(0, kv, vv, 0);
  const std::vector<depthkv::index_t> keep{0, 3, 7};
  cache.retain(0, keep);
  const bool ok = cache.length(0) == 3 && cache.positions(0, 1)[2] == 7 && cache.keys(0, 1).row(1)[0] == 44.0f;
  std::printf("depthkv %s consumer: %s\n", DEPTHKV_VERSION_STRING, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
