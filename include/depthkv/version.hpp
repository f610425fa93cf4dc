// depthkv version: the single definition of the version number. CMake reads the three
// DEPTHKV_VERSION_MAJOR/MINOR/PATCH lines below (CMakeLists.txt, file(STRINGS)) for project(),
// the package version file and depthkv.pc; keep each as `#define NAME <decimal>` on its own line.
#pragma once

#define DEPTHKV_VERSION_MAJOR 0
#define DEPTHKV_VERSION_MINOR 1
#define DEPTHKV_VERSION_PATCH 0

// "MAJOR.MINOR.PATCH", built from the three numbers above.
#define DEPTHKV_VERSION_STRINGIFY_(x) #x
#define DEPTHKV_VERSION_STRINGIFY(x) DEPTHKV_VERSION_STRINGIFY_(x)
#define DEPTHKV_VERSION_STRING                      \
  DEPTHKV_VERSION_STRINGIFY(DEPTHKV_VERSION_MAJOR) "." \
  DEPTHKV_VERSION_STRINGIFY(DEPTHKV_VERSION_MINOR) "." \
  DEPTHKV_VERSION_STRINGIFY(DEPTHKV_VERSION_PATCH)
