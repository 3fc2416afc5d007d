#pragma once
// A dense tensor seen in memory order as [outer, channels, inner]; see layout.h.

#include <cstdint>

namespace medkern {

struct ChannelLayout {
  int64_t outer;
  int64_t channels;
  int64_t inner;
};

}  // namespace medkern
