// The cuemu scheduler: blocks in order, the threads of a block as fibers on one OS thread (see
// include/cuemu/core.h). A fiber switch is a few instructions on x86-64 (callee-saved registers
// and the stack pointer; glibc's swapcontext makes two system calls per switch, which dominated
// the run time) and swapcontext elsewhere. AddressSanitizer is told about every stack switch.
#include "cuemu/core.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#else
#define CUEMU_ASAN 0
#endif

#if defined(__x86_64__)
#define CUEMU_ASM_SWITCH 1
// cuemu_switch(save, next): pushes the callee-saved registers and the FP control words, stores
// the stack pointer in *save, loads `next` and pops the same frame from there.
extern "C" void cuemu_switch(void** save, void* next);
asm(R"(
  .text
  .globl cuemu_switch
  .type cuemu_switch, @function
cuemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuemu_switch, .-cuemu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#else
#define CUEMU_ASM_SWITCH 0
#endif

namespace cuemu {

ThreadState* g_thread = nullptr;

namespace {

constexpr size_t kFiberStack = size_t(256) << 10;  // sanitizers make frames large
constexpr size_t kGuard = 4096;
constexpr size_t kMaxStaticShared = size_t(48) << 10;  // the static __shared__ limit per block

enum class State { ready, waiting, done };
enum class Wait { none, block, warp };

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t context;  // without the assembly switch
  void* sp = nullptr;  // with it: the saved stack pointer
  char* stack = nullptr;  // usable part, above a PROT_NONE guard page
  ThreadState thread;
  State state = State::ready;
  Wait wait = Wait::none;
  uint64_t wait_generation = 0;
  const char* wait_op = nullptr;
  void* fake_stack = nullptr;
};

struct WarpState {
  Barrier barrier;
  int lanes = 0;
  void* data[32];
  const char* op[32];
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  Barrier barrier;
  std::vector<void*> shared;
  size_t shared_bytes = 0;
  const std::function<void()>* body = nullptr;
};

Block g_block;
Fiber* g_fiber = nullptr;
ucontext_t g_scheduler;
void* g_scheduler_sp = nullptr;
void* g_scheduler_fake_stack = nullptr;
const void* g_scheduler_stack_bottom = nullptr;
size_t g_scheduler_stack_size = 0;
uint64_t g_epoch = 0;
cudaError_t g_last_error = cudaSuccess;
LaunchStats g_stats{};
std::function<bool(const uint3&, const dim3&)> g_filter;
bool g_shuffled = true;
uint64_t g_rng = 0x9e3779b97f4a7c15ull;
std::vector<char*> g_stacks;  // reused across blocks

uint64_t next_random() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

void start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#if CUEMU_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

void finish_switch(void* fake_stack_save, const void** bottom_old, size_t* size_old) {
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

// Back to the scheduler from a fiber that waits (it is resumed later).
void yield_to_scheduler() {
  Fiber* self_fiber = g_fiber;
  ++g_stats.switches;
  start_switch(&self_fiber->fake_stack, g_scheduler_stack_bottom, g_scheduler_stack_size);
#if CUEMU_ASM_SWITCH
  cuemu_switch(&self_fiber->sp, g_scheduler_sp);
#else
  swapcontext(&self_fiber->context, &g_scheduler);
#endif
  finish_switch(self_fiber->fake_stack, &g_scheduler_stack_bottom, &g_scheduler_stack_size);
}

#if CUEMU_ASM_SWITCH
void* g_dead_fiber_sp = nullptr;  // where a finished fiber's last switch stores its (unused) stack pointer
#endif

// No instrumented locals here: this frame is left by a switch, never by a return, so AddressSanitizer
// could not unpoison it before the stack is reused.
__attribute__((no_sanitize("address"))) void fiber_entry() {
  finish_switch(nullptr, &g_scheduler_stack_bottom, &g_scheduler_stack_size);
  (*g_block.body)();
  g_fiber->state = State::done;
  ++g_stats.switches;
  start_switch(nullptr, g_scheduler_stack_bottom, g_scheduler_stack_size);  // this fiber's stack dies
#if CUEMU_ASM_SWITCH
  cuemu_switch(&g_dead_fiber_sp, g_scheduler_sp);
  __builtin_unreachable();
#endif
  // with ucontext, returning continues at uc_link, the scheduler
}

#if CUEMU_ASM_SWITCH
// The first switch to a fiber "returns" into fiber_entry with a stack laid out as cuemu_switch
// pops it: FP control words, six registers, then the return address.
void* initial_stack(char* stack, size_t size) {
#if CUEMU_ASAN
  // Frames of the previous fiber on this stack all returned (and unpoisoned themselves); clear
  // the top of the stack anyway, where a fault mid-frame could have left poison.
  __asan_unpoison_memory_region(stack + size - 16384, 16384);
#endif
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                   // fake return address of fiber_entry (16-aligned above)
  *--sp = reinterpret_cast<void*>(&fiber_entry);     // popped by ret: entry with rsp = 8 mod 16
  for (int r = 0; r < 6; ++r) *--sp = nullptr;       // rbp, rbx, r12-r15
  uint32_t control[2] = {0x1f80u, 0x037fu};          // default MXCSR and x87 control word
  --sp;
  std::memcpy(sp, control, sizeof control);
  return sp;
}
#endif

void resume(Fiber& f) {
  g_fiber = &f;
  g_thread = &f.thread;
  f.state = State::ready;
  f.wait = Wait::none;
  start_switch(&g_scheduler_fake_stack, f.stack, kFiberStack);
#if CUEMU_ASM_SWITCH
  cuemu_switch(&g_scheduler_sp, f.sp);
#else
  swapcontext(&g_scheduler, &f.context);
#endif
  finish_switch(g_scheduler_fake_stack, nullptr, nullptr);
  g_thread = nullptr;
  g_fiber = nullptr;
}

char* fiber_stack(size_t index) {
  while (g_stacks.size() <= index) {
    void* p = mmap(nullptr, kFiberStack + kGuard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) fail("cannot map a fiber stack");
    mprotect(p, kGuard, PROT_NONE);  // an overflowing fiber faults instead of corrupting its neighbour
    g_stacks.push_back(static_cast<char*>(p) + kGuard);
  }
  return g_stacks[index];
}

bool runnable(const Fiber& f) {
  switch (f.state) {
    case State::ready: return true;
    case State::done: return false;
    case State::waiting: break;
  }
  const Barrier& b = f.wait == Wait::block ? g_block.barrier : g_block.warps[size_t(f.thread.warp)].barrier;
  return b.generation != f.wait_generation;
}

[[noreturn]] void report_deadlock() {
  int at_block = 0, at_warp = 0, exited = 0;
  const char* warp_op = "";
  int example = -1;  // the first thread that waits
  for (const Fiber& f : g_block.fibers) {
    if (f.state == State::done) {
      ++exited;
      continue;
    }
    if (example < 0) example = f.thread.linear;
    if (f.wait == Wait::block) {
      ++at_block;
    } else {
      ++at_warp;
      warp_op = f.wait_op;
    }
  }
  g_thread = nullptr;
  const uint3 b = g_block.fibers[0].thread.block_idx;
  fail("barrier divergence in block (%u, %u, %u): %d threads wait at __syncthreads, %d at a warp collective %s "
       "(first waiting: thread %d), %d have exited; a barrier must be reached by every thread of the block (lane of "
       "the warp)", b.x, b.y, b.z, at_block, at_warp, warp_op, example, exited);
}

void run_block(const uint3& block_idx, const dim3& grid, const dim3& block, const std::function<void()>& body) {
  const int threads = int(block.x * block.y * block.z);
  ++g_epoch;
  g_block.body = &body;
  g_block.barrier = Barrier{};
  g_block.fibers.resize(size_t(threads));
  g_block.warps.assign(size_t((threads + 31) / 32), WarpState{});
  for (int t = 0; t < threads; ++t) {
    Fiber& f = g_block.fibers[size_t(t)];
    f = Fiber{};
    f.stack = fiber_stack(size_t(t));
    f.thread.thread_idx = {unsigned(t) % block.x, unsigned(t) / block.x % block.y, unsigned(t) / (block.x * block.y)};
    f.thread.block_idx = block_idx;
    f.thread.block_dim = block;
    f.thread.grid_dim = grid;
    f.thread.linear = t;
    f.thread.warp = t / 32;
    f.thread.lane = t % 32;
    g_block.warps[size_t(t / 32)].lanes++;
#if CUEMU_ASM_SWITCH
    f.sp = initial_stack(f.stack, kFiberStack);
#else
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kFiberStack;
    f.context.uc_link = &g_scheduler;
    makecontext(&f.context, fiber_entry, 0);
#endif
  }
  std::vector<int> order(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) order[size_t(t)] = t;
  int done = 0;
  while (done < threads) {
    if (g_shuffled) {
      for (int t = threads - 1; t > 0; --t) std::swap(order[size_t(t)], order[next_random() % uint64_t(t + 1)]);
    }
    bool progress = false;
    for (int t : order) {
      Fiber& f = g_block.fibers[size_t(t)];
      if (!runnable(f)) continue;
      ++g_stats.switches;
      resume(f);
      progress = true;
      if (f.state == State::done) ++done;
    }
    if (!progress) report_deadlock();
  }
  for (void* p : g_block.shared) std::free(p);
  g_block.shared.clear();
  g_block.shared_bytes = 0;
  ++g_stats.blocks_run;
  g_stats.threads_run += uint64_t(threads);
}

// Wait at barrier b (of kind `wait`) unless this thread completes it.
void arrive(Barrier& b, int expected, Wait wait, const char* op) {
  if (++b.arrived == expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  g_fiber->state = State::waiting;
  g_fiber->wait = wait;
  g_fiber->wait_generation = b.generation;
  g_fiber->wait_op = op;
  yield_to_scheduler();
}

}  // namespace

void fail(const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "cuemu: ");
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  if (g_thread != nullptr) {
    const ThreadState& t = *g_thread;
    std::fprintf(stderr, " [block (%u, %u, %u), thread (%u, %u, %u)]", t.block_idx.x, t.block_idx.y, t.block_idx.z,
                 t.thread_idx.x, t.thread_idx.y, t.thread_idx.z);
  }
  std::fprintf(stderr, "\n");
#if CUEMU_ASAN
  __sanitizer_print_stack_trace();
#endif
  std::abort();
}

void syncthreads() {
  self();
  arrive(g_block.barrier, int(g_block.fibers.size()), Wait::block, "__syncthreads");
}

unsigned warp_full_mask() {
  const int lanes = g_block.warps[size_t(self().warp)].lanes;
  return lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
}

void warp_collective_raw(const char* op, void* data, CollectiveFn run, void* ctx) {
  const ThreadState& t = self();
  WarpState& w = g_block.warps[size_t(t.warp)];
  w.data[t.lane] = data;
  w.op[t.lane] = op;
  if (w.barrier.arrived + 1 == w.lanes) {  // the last lane: run the operation for the whole warp
    for (int l = 0; l < w.lanes; ++l) {
      if (std::strcmp(w.op[l], op) != 0) {
        fail("warp %d diverged: lane %d is in %s while lane %d is in %s", t.warp, l, w.op[l], t.lane, op);
      }
    }
    run(ctx, w.data, w.lanes);
  }
  arrive(w.barrier, w.lanes, Wait::warp, op);
}

uint64_t block_epoch() { return g_epoch; }

void* shared_alloc(size_t bytes, size_t align) {
  self();
  g_block.shared_bytes += bytes;
  if (g_block.shared_bytes > kMaxStaticShared) {
    fail("the block's __shared__ variables take %zu bytes, over the 48 KiB static limit", g_block.shared_bytes);
  }
  void* p = nullptr;
  if (posix_memalign(&p, align < sizeof(void*) ? sizeof(void*) : align, bytes) != 0) fail("out of memory");
  std::memset(p, 0xff, bytes);  // NaN in every floating type: uninitialized reads show in the results
  g_block.shared.push_back(p);
  return p;
}

LaunchStats stats() { return g_stats; }
cudaError_t take_last_error() {
  const cudaError_t err = g_last_error;
  g_last_error = cudaSuccess;
  return err;
}
void set_last_error(cudaError_t err) { g_last_error = err; }
void set_block_filter(std::function<bool(const uint3&, const dim3&)> filter) { g_filter = std::move(filter); }
void set_shuffled_schedule(bool shuffled) { g_shuffled = shuffled; }

bool launch_config_ok(const LaunchConfig& c) {
  if (g_thread != nullptr) fail("a kernel launched another kernel (dynamic parallelism is not emulated)");
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  const bool ok = c.grid.x >= 1 && c.grid.y >= 1 && c.grid.z >= 1 && c.grid.x <= 2147483647u && c.grid.y <= 65535 &&
                  c.grid.z <= 65535 && threads >= 1 && threads <= 1024 && c.block.x <= 1024 && c.block.y <= 1024 &&
                  c.block.z <= 64;
  if (!ok) {
    ++g_stats.rejected;
    g_last_error = cudaErrorInvalidConfiguration;
    return false;
  }
  if (c.dynamic_smem != 0) fail("dynamic shared memory is not emulated (%zu bytes requested)", c.dynamic_smem);
  return true;
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  ++g_stats.launches;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        const uint3 b{x, y, z};
        if (g_filter && !g_filter(b, grid)) {
          ++g_stats.blocks_skipped;
          continue;
        }
        run_block(b, grid, block, body);
      }
    }
  }
}

}  // namespace cuemu
