// The cache of device descriptor tables behind the work lists (worklist_tables.cpp): the CL/FC
// units' and the CK folds'.
#pragma once

#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAStream.h>

namespace expandnets::binding {

// A planned descriptor table on the device, its totals, the stream it was allocated on, and whether
// a CUDA graph captured it (then the graph holds its address: it stays allocated for good).
template <typename Totals>
struct DeviceTable {
  at::Tensor table;
  Totals total;
  c10::Stream built_on;
  bool captured = false;
};

// Descriptor tables built and copied to the device once per key, the key holding every pointer and
// shape the table does: an entry found again is right whatever happened in between, and a step
// whose inputs stay where they are reuses it with no host-to-device copy and no synchronization,
// as CUDA-graph capture needs (a capture that misses is refused: `what` names the entries in the
// message). Past `max_tables` entries those no graph captured are dropped; the allocator frees
// them in stream order (record_stream for tables read elsewhere). Shared by the CL/FC and the CK
// work lists.
template <typename Entry, typename Totals>
class DeviceTableCache {
 public:
  explicit DeviceTableCache(size_t max_tables) : max_tables_(max_tables) {}

  // `plan(entries)` -> the totals, called on a miss with the host descriptors `describe()` made.
  template <typename Describe, typename Plan>
  DeviceTable<Totals> get(const char* op, const char* what, std::vector<int64_t> key, const at::Device& device,
                          Describe describe, Plan plan) {
    const c10::Stream stream = c10::cuda::getCurrentCUDAStream();
    const bool capturing = c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (const auto found = cache_.find(key); found != cache_.end()) {
      DeviceTable<Totals>& list = found->second;
      if (capturing) {
        list.captured = true;
      } else if (stream != list.built_on) {
        list.table.record_stream(stream);
      }
      return list;
    }
    TORCH_CHECK(!capturing, op, ": ", what,
                " work list is not built yet, and building it copies to the device, which a CUDA graph capture "
                "cannot do: run one step (forward and backward) before capturing");
    std::vector<Entry> entries = describe();
    DeviceTable<Totals> list{at::Tensor(), plan(entries), stream};
    const int64_t bytes = int64_t(entries.size() * sizeof(Entry));
    at::Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(host.mutable_data_ptr(), entries.data(), size_t(bytes));
    list.table = host.to(device);
    if (cache_.size() >= max_tables_) {
      for (auto it = cache_.begin(); it != cache_.end();) it = it->second.captured ? std::next(it) : cache_.erase(it);
    }
    cache_.emplace(std::move(key), list);
    return list;
  }

 private:
  const size_t max_tables_;
  std::mutex mutex_;
  std::map<std::vector<int64_t>, DeviceTable<Totals>> cache_;
};

}  // namespace expandnets::binding
