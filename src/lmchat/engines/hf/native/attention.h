// The per-element work of the decode step in vector form: e^x for SiLU and softmax, and one query head's attention
// over its row's cached positions. Written with the kernels' vector type (quantized.h), so the same code serves the
// x86-64-v3 and v4 builds (and a plain build, lane by lane).
#pragma once

#include "quantized.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

// e^x in a form the compiler vectorises inside `#pragma omp simd` loops (glibc's expf is one call per element):
// x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, Cody and Waite), e^r by Cephes' degree-7 polynomial
// (relative error below 2e-7, about one float ulp), 2^n from the exponent bits. Inputs are clamped to
// [-87, 88] (e^-87 is near the smallest normal float; e^88 near the largest finite one).
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  float r = __builtin_fmaf(n, -0.693359375f, x);
  r = __builtin_fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = __builtin_fmaf(p, r, 1.3981999507e-3f);
  p = __builtin_fmaf(p, r, 8.3334519073e-3f);
  p = __builtin_fmaf(p, r, 4.1665795894e-2f);
  p = __builtin_fmaf(p, r, 1.6666665459e-1f);
  p = __builtin_fmaf(p, r, 5.0000001201e-1f);
  p = __builtin_fmaf(p * r, r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// x * sigmoid(x) * up for n inputs (SwiGLU's gate)
inline void silu_gate_row(const float* gate, const float* up, int64_t n, float* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + exp_approx(-gate[i])) * up[i];
}

// q . keys[j] for one key: V-lane partial products in two accumulators, summed once
inline float dot_head(const float* q, const float* key, int64_t hd) {
  if (hd % (2 * V) != 0) {
    float dot = 0.0f;
    for (int64_t d = 0; d < hd; ++d) dot += q[d] * key[d];
    return dot;
  }
  vf a = {}, b = {};
  for (int64_t d = 0; d < hd; d += 2 * V) {
    a = fma_v(load_f(q + d), load_f(key + d), a);
    b = fma_v(load_f(q + d + V), load_f(key + d + V), b);
  }
  return hsum(a + b);
}

// out[c * V ..] = sum_j weight[j] * values[j][c * V ..] for C vectors of a head, held in registers over j
template <int C>
inline void weighted_values(const float* weight, const float* values, int64_t length, int64_t hd, float* out) {
  vf acc[C] = {};
  for (int64_t j = 0; j < length; ++j) {
    const vf w = splat(weight[j]);
    const float* row = values + j * hd;
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[c] = fma_v(w, load_f(row + c * V), acc[c]);
  }
  for (int c = 0; c < C; ++c) store_f(out + c * V, acc[c]);
}

// one query head q [hd] over ``length`` cached positions (keys and values [length, hd]): softmax(q k^T * scaling)
// times the values into out [hd]; ``score`` holds ``length`` floats of scratch
inline void attend_head(const float* q, const float* keys, const float* values, int64_t length, int64_t hd,
                        float scaling, float* score, float* out) {
  float top = -INFINITY;
  for (int64_t j = 0; j < length; ++j) {
    score[j] = dot_head(q, keys + j * hd, hd) * scaling;
    top = std::max(top, score[j]);
  }
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < length; ++j) total += (score[j] = exp_approx(score[j] - top));
  const float inverse = 1.0f / total;
#pragma omp simd
  for (int64_t j = 0; j < length; ++j) score[j] *= inverse;
  int64_t d = 0;
  for (; d + 4 * V <= hd; d += 4 * V) weighted_values<4>(score, values + d, length, hd, out + d);
  for (; d + V <= hd; d += V) weighted_values<1>(score, values + d, length, hd, out + d);
  if (d < hd) {  // a head size that is no multiple of the vector width
    std::fill(out + d, out + hd, 0.0f);
    for (int64_t j = 0; j < length; ++j)
      for (int64_t e = d; e < hd; ++e) out[e] += score[j] * values[j * hd + e];
  }
}

}  // namespace
