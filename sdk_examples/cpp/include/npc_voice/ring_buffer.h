// Single-producer single-consumer ring buffer of float samples.
//
// The network thread writes decoded PCM; the game's audio thread reads it. Neither
// side ever takes a lock or allocates, so the audio thread cannot be blocked by
// the network. Indices only grow; the capacity is a power of two so wrapping is
// a mask.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace npc_voice {

class RingBuffer {
 public:
  explicit RingBuffer(size_t min_capacity) {
    size_t cap = 1;
    while (cap < min_capacity) cap <<= 1;
    data_.resize(cap);
    mask_ = cap - 1;
  }

  size_t capacity() const { return data_.size(); }

  // Producer: copies up to n samples, returns how many fit.
  size_t Write(const float* src, size_t n) {
    const uint64_t w = write_.load(std::memory_order_relaxed);
    const uint64_t r = read_.load(std::memory_order_acquire);
    const size_t room = data_.size() - static_cast<size_t>(w - r);
    n = std::min(n, room);
    for (size_t i = 0; i < n; ++i) data_[(w + i) & mask_] = src[i];
    write_.store(w + n, std::memory_order_release);
    return n;
  }

  // Consumer: copies up to n samples, returns how many were available.
  size_t Read(float* dst, size_t n) {
    const uint64_t r = read_.load(std::memory_order_relaxed);
    const uint64_t w = write_.load(std::memory_order_acquire);
    n = std::min(n, static_cast<size_t>(w - r));
    for (size_t i = 0; i < n; ++i) dst[i] = data_[(r + i) & mask_];
    read_.store(r + n, std::memory_order_release);
    return n;
  }

  // Consumer: drop everything queued (barge-in). Safe only from the consumer side.
  void Clear() { read_.store(write_.load(std::memory_order_acquire), std::memory_order_release); }

  size_t Available() const {
    return static_cast<size_t>(write_.load(std::memory_order_acquire) - read_.load(std::memory_order_acquire));
  }

 private:
  std::vector<float> data_;
  size_t mask_ = 0;
  std::atomic<uint64_t> write_{0};
  std::atomic<uint64_t> read_{0};
};

}  // namespace npc_voice
