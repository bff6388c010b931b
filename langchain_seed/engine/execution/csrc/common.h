// Shared definitions of the engine's CPU kernels (see ../kernels.py for the Python side).
//
// Every kernel computes each output row on its own, with one fixed order of arithmetic
// that does not depend on how many rows run beside it: a row's result is the same alone
// or in a batch of 32 (the engine's batch invariance rests on this). Vectors are GCC's
// vector extensions (16 fp32 lanes: one AVX-512 register, two AVX2 ones), with AVX-512
// intrinsics where they say more than the extensions can.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace seed {

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

static inline float bf16_to_f(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t f_to_bf16(float f) {  // round to nearest even, as PyTorch
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7FC0;
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

static inline v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, 64);
  return v;
}
static inline v16f load16(const uint16_t* p) {  // 16 bf16 widened to fp32 (exact)
#if defined(__AVX512F__)
  const __m512i i = _mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
  return reinterpret_cast<v16f>(_mm512_castsi512_ps(i));
#else
  v16h h;
  std::memcpy(&h, p, 32);
  v16i i = __builtin_convertvector(h, v16i) << 16;
  v16f v;
  std::memcpy(&v, &i, 64);
  return v;
#endif
}
static inline void store16(float* p, v16f v) { std::memcpy(p, &v, 64); }

// The bf16 bits of 16 floats, rounded to nearest even as f_to_bf16 (NaN: 0x7FC0).
static inline v16u bf16_bits(v16f v) {
  v16u u;
  std::memcpy(&u, &v, 64);
  v16u r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const v16i nan = v != v;  // all ones where NaN
  return nan ? v16u{} + 0x7FC0u : r;
}
static inline void store16(uint16_t* p, v16f v) {
  const v16h h = __builtin_convertvector(bf16_bits(v), v16h);
  std::memcpy(p, &h, 32);
}
// Round 16 floats to bf16 and back (where the reference rounds an intermediate).
static inline v16f round16(v16f v) {
  const v16u u = bf16_bits(v) << 16;
  v16f out;
  std::memcpy(&out, &u, 64);
  return out;
}

// Typed access: T is float or at::BFloat16.
template <typename T>
static inline v16f vload(const T* p) {
  if constexpr (std::is_same_v<T, float>) return load16(p);
  else return load16(reinterpret_cast<const uint16_t*>(p));
}
template <typename T>
static inline void vstore(T* p, v16f v) {
  if constexpr (std::is_same_v<T, float>) store16(p, v);
  else store16(reinterpret_cast<uint16_t*>(p), v);
}
template <typename T>
static inline v16f vround(v16f v) {  // to T and back: identity for float
  if constexpr (std::is_same_v<T, float>) return v;
  else return round16(v);
}
template <typename T>
static inline float to_f(T v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return bf16_to_f(reinterpret_cast<const uint16_t&>(v));
}
template <typename T>
static inline float rnd(float v) {  // scalar vround
  if constexpr (std::is_same_v<T, float>) return v;
  else return bf16_to_f(f_to_bf16(v));
}
template <typename T>
static inline void put(T* p, float v) {
  if constexpr (std::is_same_v<T, float>) *p = v;
  else *reinterpret_cast<uint16_t*>(p) = f_to_bf16(v);
}

// Sum of 16 lanes in one fixed order (a tree), whatever the caller.
static inline float hsum16(v16f v) {
  typedef float v8f __attribute__((vector_size(32)));
  typedef float v4f __attribute__((vector_size(16)));
  v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  v8f b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  a = a + b;
  v4f c = __builtin_shufflevector(a, a, 0, 1, 2, 3);
  v4f d = __builtin_shufflevector(a, a, 4, 5, 6, 7);
  c = c + d;
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// exp for x <= 0 (softmax after the max is taken, silu's exp(-|x|)): 2^n * p(f), fixed
// polynomial, ~2 ulp; the same arithmetic for every lane and call.
static inline v16f exp16(v16f x) {
  x = x < -87.0f ? v16f{} - 87.0f : x;  // below, exp underflows (to ~1e-38)
  // n = round(x / ln 2) to nearest even: adding and taking away 1.5 * 2^23 leaves no
  // fraction bits (|x / ln 2| < 2^22 here)
  const v16f n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const v16f f = x - n * 0.693359375f - n * -2.12194440e-4f;  // x - n ln 2, in two parts
  v16f p = v16f{} + 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  const v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;  // 2^n
  v16f scale;
  std::memcpy(&scale, &e, 64);
  return p * scale;
}

// The operations (one file each), registered in ops.cpp.
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t N,
                  const std::optional<at::Tensor>& bias, bool out_float);
at::Tensor add_rms_norm(at::Tensor x, const std::optional<at::Tensor>& y, const at::Tensor& w,
                        double eps);
at::Tensor silu_mul(const at::Tensor& gu);
at::Tensor rope_store(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& pos, const at::Tensor& row, at::Tensor kc, at::Tensor vc,
                      int64_t H, int64_t KVH, const std::optional<at::Tensor>& qn,
                      const std::optional<at::Tensor>& kn, double eps);
at::Tensor attention(const at::Tensor& q, const at::Tensor& kc, const at::Tensor& vc,
                     const at::Tensor& rows, const at::Tensor& qstart, const at::Tensor& qlen,
                     const at::Tensor& ctx, int64_t window, double scale);
bool has_avx512_bf16();

}  // namespace seed
