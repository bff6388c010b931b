// The operations' schemas and their CPU implementations (torch.ops.seed.*).
#include <torch/library.h>

#include "common.h"

TORCH_LIBRARY(seed, m) {
  m.def("linear(Tensor x, Tensor packed, int N, Tensor? bias, bool out_float) -> Tensor");
  m.def("has_avx512_bf16() -> bool", &seed::has_avx512_bf16);
  m.def("add_rms_norm(Tensor(a!) x, Tensor? y, Tensor w, float eps) -> Tensor");
  m.def("silu_mul(Tensor gu) -> Tensor");
  m.def("rope_store(Tensor qkv, Tensor cos, Tensor sin, Tensor pos, Tensor row, Tensor(a!) kc, "
        "Tensor(b!) vc, int H, int KVH, Tensor? qn, Tensor? kn, float eps) -> Tensor");
  m.def("attention(Tensor q, Tensor kc, Tensor vc, Tensor rows, Tensor qstart, Tensor qlen, "
        "Tensor ctx, int window, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(seed, CPU, m) {
  m.impl("linear", &seed::linear);
  m.impl("add_rms_norm", &seed::add_rms_norm);
  m.impl("silu_mul", &seed::silu_mul);
  m.impl("rope_store", &seed::rope_store);
  m.impl("attention", &seed::attention);
}

