// SplitMix64 (Steele, Lea, Flood 2014): fast and seedable; the synthetic models' weights only need
// to look random, and the same seed must give the same model on every machine.
#pragma once

#include <cstdint>

namespace tandem {

struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // Uniform in [-1, 1).
    float symmetric() { return float(double(next() >> 11) * 0x1.0p-52 - 1.0); }
};

}  // namespace tandem
