// cuemu: the CUDA execution model on a CPU, for running csrc/ kernels as host C++ in CI.
//
// A launch runs its blocks one after another; the threads of a block run as fibers on one OS
// thread, each until it reaches __syncthreads(), a warp-collective operation or its end,
// in a shuffled order that changes every pass (a missing barrier then shows as wrong data). A
// barrier that not every thread of the block (or lane of the warp) reaches is reported as a
// divergence, not waited on forever. __shared__ variables (rewritten by tests/cuda_cpu/build.py
// into SharedSlot lookups) live in one heap allocation each per block, filled with 0xFF (NaN)
// bytes when the block starts: AddressSanitizer sees overruns and uninitialized reads turn into
// NaN. Warp-collective operations (shuffles, WMMA) run once per warp, by the last lane to arrive,
// on every lane's arguments. Errors print where they happened and abort.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };

namespace cuemu {

// Prints "cuemu: <message>" with the running kernel thread (if any), a stack trace, and aborts.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The CUDA thread now running.
struct ThreadState {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int linear, warp, lane;
};
extern ThreadState* g_thread;
inline const ThreadState& self() {
  if (g_thread == nullptr) fail("a device builtin (threadIdx, __syncthreads, ...) was used outside a kernel");
  return *g_thread;
}

void syncthreads();

// Warp collectives: every lane of the warp calls with the same `op` and its own `data`; the last
// lane to arrive runs run(ctx, lane_data, lanes) once for the whole warp, then all lanes go on.
using CollectiveFn = void (*)(void* ctx, void** lane_data, int lanes);
void warp_collective_raw(const char* op, void* data, CollectiveFn run, void* ctx);

template <class Data, class Fn>
void warp_collective(const char* op, Data& mine, Fn&& fn) {
  using F = std::remove_reference_t<Fn>;
  warp_collective_raw(
      op, &mine,
      [](void* ctx, void** lanes, int n) { (*static_cast<F*>(ctx))(reinterpret_cast<Data**>(lanes), n); }, &fn);
}
// The mask of the lanes that exist in the calling thread's warp (all 32 unless the block size is
// not a multiple of 32).
unsigned warp_full_mask();

// Per-block storage of one __shared__ variable.
uint64_t block_epoch();
void* shared_alloc(size_t bytes, size_t align);
struct SharedSlot {
  uint64_t epoch = 0;
  void* ptr = nullptr;
  template <class U>
  U& get(size_t align = 0) {
    static_assert(std::is_trivially_copyable<U>::value, "__shared__ variables must be trivial");
    if (epoch != block_epoch()) {
      ptr = shared_alloc(sizeof(U), align > alignof(U) ? align : alignof(U));
      epoch = block_epoch();
    }
    return *static_cast<U*>(ptr);
  }
};

// Launch bookkeeping.
struct LaunchStats {
  uint64_t launches, rejected, blocks_run, blocks_skipped, threads_run, switches;
};
LaunchStats stats();
cudaError_t take_last_error();
void set_last_error(cudaError_t err);
// Run only the blocks for which filter(block_idx, grid_dim) is true (none set: all). For tests
// of a few blocks of a huge grid; every csrc kernel's blocks are independent of each other.
void set_block_filter(std::function<bool(const uint3&, const dim3&)> filter);
// Schedule of the fibers between barriers: shuffled (default; seeded, reproducible) or in order.
void set_shuffled_schedule(bool shuffled);

// Runs body() once per thread of every block of the grid (the caller has checked the config).
void run_grid(dim3 grid, dim3 block, const std::function<void()>& body);

template <class... A>
struct PendingLaunch;

struct LaunchConfig {
  dim3 grid, block;
  size_t dynamic_smem;
  template <class... A>
  PendingLaunch<std::decay_t<A>...> operator()(A&&... args) const {
    return {*this, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)};
  }
};

template <class... A>
struct PendingLaunch {
  LaunchConfig config;
  std::tuple<A...> args;
};

// `kernel<<<grid, block, smem, stream>>>(args)` is rewritten by build.py into
// `kernel ->* ::cuemu::launch_config(grid, block, smem, stream)(args)`.
inline LaunchConfig launch_config(dim3 grid, dim3 block, size_t dynamic_smem = 0, cudaStream_t = nullptr) {
  return {grid, block, dynamic_smem};
}

bool launch_config_ok(const LaunchConfig& config);

template <class... P, class... A>
void operator->*(void (*kernel)(P...), PendingLaunch<A...>&& launch) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  if (!launch_config_ok(launch.config)) return;
  const auto& args = launch.args;
  // Every thread gets its own copy of the parameters, as from the kernel's parameter space.
  run_grid(launch.config.grid, launch.config.block, [&] { std::apply([&](const A&... a) { kernel(a...); }, args); });
}

template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) {
  kernel->*launch_config(grid, block)(std::forward<A>(args)...);
}

}  // namespace cuemu
