// What the ops of csrc/binding/ hand the launchers of csrc/expandnets/: typed raw pointers,
// strides, outputs in the input's memory format, and the current CUDA stream.
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "expandnets/conv.h"

namespace expandnets::binding {

template <typename T>
const T* in(const at::Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}

template <typename T>
T* out(at::Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

// Optional operands (biases, a unit's last layer) reach the kernels as null pointers.
template <typename T>
const T* in_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? in<T>(*t) : nullptr;
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// A new tensor in x's memory format (channels_last stays channels_last), as the fake impl says.
inline at::Tensor empty_like_layout(const at::Tensor& x, at::IntArrayRef sizes) {
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  return at::empty(sizes, x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
}

}  // namespace expandnets::binding
