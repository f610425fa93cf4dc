// depthkv version macros.
#pragma once

#define DEPTHKV_VERSION_MAJOR 0
#define DEPTHKV_VERSION_MINOR 1
#define DEPTHKV_VERSION_PATCH 0
#define DEPTHKV_VERSION_STRING "0.1.0"

namespace depthkv {
// Version of the headers this translation unit was compiled against.
inline constexpr int version_major = DEPTHKV_VERSION_MAJOR;
inline constexpr int version_minor = DEPTHKV_VERSION_MINOR;
inline constexpr int version_patch = DEPTHKV_VERSION_PATCH;
}  // namespace depthkv
