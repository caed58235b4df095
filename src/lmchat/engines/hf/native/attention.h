// The per-element work of the decode step in vector form: e^x for SiLU and softmax, and the attention of the query
// heads that share one kv head over their row's cached positions. Written with the kernels' vector type (quantized.h), so the same code serves the
// x86-64-v3 and v4 builds (and a plain build, lane by lane).
#pragma once

#include "quantized.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

// e^x: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, Cody and Waite), e^r by Cephes' degree-7 polynomial
// (relative error below 2e-7, about one float ulp), 2^n from the exponent bits. Inputs are clamped to [-87, 88]
// (e^-87 is near the smallest normal float; e^88 near the largest finite one). exp_v: V lanes at once, written
// with vector operations (GCC left the `omp simd` loops of the scalar form scalar: SiLU then cost a tenth of a
// 64-row step); the same operations lane by lane, so both forms give the same numbers.
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

typedef int32_t vi __attribute__((vector_size(V * sizeof(int32_t))));

inline vf round_v(vf x) {  // to the nearest integer, ties to even (rint in the default rounding mode)
#if defined(__AVX512F__)
  return (vf)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__AVX__)
  return (vf)_mm256_round_ps((__m256)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  for (int i = 0; i < V; ++i) x[i] = __builtin_rintf(x[i]);
  return x;
#endif
}

inline vf max_v(vf a, vf b) { return a > b ? a : b; }
inline vf min_v(vf a, vf b) { return a < b ? a : b; }

inline vf exp_v(vf x) {
  x = min_v(max_v(x, splat(-87.0f)), splat(88.0f));
  const vf n = round_v(x * splat(1.44269504088896341f));
  vf r = fma_v(n, splat(-0.693359375f), x);
  r = fma_v(n, splat(2.12194440e-4f), r);
  vf p = splat(1.9875691500e-4f);
  p = fma_v(p, r, splat(1.3981999507e-3f));
  p = fma_v(p, r, splat(8.3334519073e-3f));
  p = fma_v(p, r, splat(4.1665795894e-2f));
  p = fma_v(p, r, splat(1.6666665459e-1f));
  p = fma_v(p, r, splat(5.0000001201e-1f));
  p = fma_v(p * r, r, r) + splat(1.0f);
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)bits;
}

// SwiGLU's gate: gate * sigmoid(gate) * up
inline float silu_gate_value(float gate, float up) { return gate / (1.0f + exp_approx(-gate)) * up; }

// the same for n inputs
inline void silu_gate_row(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + V <= n; i += V) {
    const vf g = load_f(gate + i);
    store_f(out + i, g / (splat(1.0f) + exp_v(-g)) * load_f(up + i));
  }
  for (; i < n; ++i) out[i] = silu_gate_value(gate[i], up[i]);
}

// the sum of x[i]^2 over n inputs: V lanes' sums, then their fixed tree (hsum), then the tail in order
inline float sum_squares(const float* x, int64_t n) {
  vf acc = splat(0.0f);
  int64_t i = 0;
  for (; i + V <= n; i += V) {
    const vf v = load_f(x + i);
    acc = fma_v(v, v, acc);
  }
  float sum = hsum(acc);
  for (; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// The query heads that share one kv head (grouped-query attention), NG at a time, so that their row's cached keys
// and values are read once for all of them (at 16 rows they no longer fit the caches: read per head, they were the
// step's largest memory traffic after the weights). C: value vectors summed at a time (held in registers).
constexpr int ATTEND_HEADS = 4;
constexpr int ATTEND_C = V == 16 ? 4 : 2;

// score[g][j] = q_g . keys[j] * scaling for NG heads q [NG][hd] (hd a multiple of V)
template <int NG>
inline void group_scores(const float* q, const float* keys, int64_t length, int64_t hd, float scaling,
                         float* score, int64_t score_stride) {
  for (int64_t j = 0; j < length; ++j) {
    const float* key = keys + j * hd;
    vf acc[NG] = {};
    for (int64_t d = 0; d < hd; d += V) {
      const vf k = load_f(key + d);
#pragma GCC unroll 4
      for (int g = 0; g < NG; ++g) acc[g] = fma_v(load_f(q + g * hd + d), k, acc[g]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g) score[g * score_stride + j] = hsum(acc[g]) * scaling;
  }
}

// out_g[d0 .. d0 + C V) = sum_j weight_g[j] values[j][d0 ..] for NG heads, the sums in registers over j
template <int NG, int C>
inline void group_values(const float* weight, int64_t weight_stride, const float* values, int64_t length,
                         int64_t hd, int64_t d0, float* out) {
  vf acc[NG][C] = {};
  for (int64_t j = 0; j < length; ++j) {
    const float* row = values + j * hd + d0;
    vf v[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) v[c] = load_f(row + c * V);
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g) {
      const vf w = splat(weight[g * weight_stride + j]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[g][c] = fma_v(w, v[c], acc[g][c]);
    }
  }
  for (int g = 0; g < NG; ++g)
    for (int c = 0; c < C; ++c) store_f(out + g * hd + d0 + c * V, acc[g][c]);
}

// softmax in place over one head's ``length`` scores (in vector form: the largest score and the sum of the
// exponentials by lanes, then the lanes' fixed tree; the tail lane by lane)
inline void softmax(float* score, int64_t length) {
  const int64_t whole = length - length % V;
  float top = -INFINITY;
  if (whole) {
    vf m = load_f(score);
    for (int64_t j = V; j < whole; j += V) m = max_v(m, load_f(score + j));
    for (int i = 0; i < V; ++i) top = std::max(top, m[i]);
  }
  for (int64_t j = whole; j < length; ++j) top = std::max(top, score[j]);
  const vf shift = splat(top);
  vf sums = splat(0.0f);
  for (int64_t j = 0; j < whole; j += V) {
    const vf e = exp_v(load_f(score + j) - shift);
    store_f(score + j, e);
    sums += e;
  }
  float total = hsum(sums);
  for (int64_t j = whole; j < length; ++j) total += (score[j] = exp_approx(score[j] - top));
  const float inverse = 1.0f / total;
  const vf scale = splat(inverse);
  for (int64_t j = 0; j < whole; j += V) store_f(score + j, load_f(score + j) * scale);
  for (int64_t j = whole; j < length; ++j) score[j] *= inverse;
}

template <int NG>
inline void attend_heads(const float* q, const float* keys, const float* values, int64_t length, int64_t hd,
                         float scaling, float* score, int64_t score_stride, float* out) {
  group_scores<NG>(q, keys, length, hd, scaling, score, score_stride);
  for (int g = 0; g < NG; ++g) softmax(score + g * score_stride, length);
  int64_t d = 0;
  for (; d + ATTEND_C * V <= hd; d += ATTEND_C * V)
    group_values<NG, ATTEND_C>(score, score_stride, values, length, hd, d, out);
  for (; d < hd; d += V) group_values<NG, 1>(score, score_stride, values, length, hd, d, out);
}

// a head size that is no multiple of the vector width, one head at a time, lane by lane
inline void attend_head_scalar(const float* q, const float* keys, const float* values, int64_t length, int64_t hd,
                               float scaling, float* score, float* out) {
  for (int64_t j = 0; j < length; ++j) {
    float dot = 0.0f;
    for (int64_t d = 0; d < hd; ++d) dot += q[d] * keys[j * hd + d];
    score[j] = dot * scaling;
  }
  softmax(score, length);
  std::fill(out, out + hd, 0.0f);
  for (int64_t j = 0; j < length; ++j)
    for (int64_t d = 0; d < hd; ++d) out[d] += score[j] * values[j * hd + d];
}

// ``heads`` query heads q [heads][hd] that share keys and values [length, hd] (one row's cached positions):
// softmax(q k^T * scaling) v into out [heads][hd]; ``score`` holds ``heads`` x score_stride floats of scratch
inline void attend_group(const float* q, const float* keys, const float* values, int64_t length, int64_t hd,
                         float scaling, int64_t heads, float* score, int64_t score_stride, float* out) {
  if (hd % V != 0) {
    for (int64_t h = 0; h < heads; ++h)
      attend_head_scalar(q + h * hd, keys, values, length, hd, scaling, score + h * score_stride, out + h * hd);
    return;
  }
  for (int64_t g = 0; g < heads; g += ATTEND_HEADS) {
    const float* qg = q + g * hd;
    float* sg = score + g * score_stride;
    float* og = out + g * hd;
    switch (std::min<int64_t>(ATTEND_HEADS, heads - g)) {
      case 4: attend_heads<4>(qg, keys, values, length, hd, scaling, sg, score_stride, og); break;
      case 3: attend_heads<3>(qg, keys, values, length, hd, scaling, sg, score_stride, og); break;
      case 2: attend_heads<2>(qg, keys, values, length, hd, scaling, sg, score_stride, og); break;
      default: attend_heads<1>(qg, keys, values, length, hd, scaling, sg, score_stride, og); break;
    }
  }
}

}  // namespace
