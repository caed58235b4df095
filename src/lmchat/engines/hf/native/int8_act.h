// Multiplies by quantized weights with int8 activations, of one row or many (the setting quantized_activations:
// auto; see lmchat.engines.hf.quant and docs/architecture-hf-engine.md).
//
// Each input row is rounded per group of 32 inputs to int8, symmetrically (scale = max |x| / 127, code =
// round(x / scale), ties to even), and a weight row times it is summed with the CPU's 4-way int8 dot products into
// int32 per group: int4 weights (codes 0..15) are the unsigned operand as they are; int8 weights (-127..127) are,
// on the VNNI paths, offset by 128 to make them unsigned, and the offset's share, 128 * the group's sum of
// activation codes, is taken off again; on the plain paths (whose 16-bit pair sums of an offset weight times a code
// could overflow) the unsigned operand is |w| and the activation takes w's sign (llama.cpp's AVX2 q8 dot products:
// 2 * 127 * 127 fits in 16 bits). Per output: the sum over groups of dot * activation scale * weight scale (int4:
// the weight's group scale, plus its group minimum times the group's sum of rounded x; int8: the row's scale,
// applied once at the end). The same scheme as llama.cpp's Q4_1 x Q8_1 dot products; a row's numbers do not
// depend on the other rows of the batch.
//
// Compiled for every path the build's instruction-set level allows and picked at run time from CPUID: in an
// x86-64-v4 build AVX512-VNNI (vpdpbusd) or plain AVX-512BW (vpmaddubsw + vpmaddwd); in an x86-64-v3 build
// AVX-VNNI or plain AVX2.
#pragma once

#include "quantized.h"

#include <vector>

namespace {

enum class A8Path { None, Plain, Vnni };  // float32 activations; int8 with plain AVX2/AVX-512BW; with VNNI

constexpr int64_t A8_GROUP = 32;
constexpr int A8_QUADS = A8_GROUP / 4;

// B input rows rounded to int8: codes [B][KP] (KP = 32 G; inputs past K are 0); per [B][G]: the scale, the sum of
// the rounded x (scale * the sum of the codes: the int4 minimums' share; the rounded sum, not x's own, so that the
// rounding errors of the codes' and the minimum's shares cancel as in w * x) and 128 * the sum of the codes (the
// int8 offset's share)
struct A8Rows {
  int64_t B, G, KP;
  std::vector<int8_t> codes;
  std::vector<float> scale, sum;
  std::vector<int32_t> offset;
  A8Rows(int64_t rows, int64_t K)
      : B(rows), G((K + A8_GROUP - 1) / A8_GROUP), KP(G * A8_GROUP), codes(B * KP, 0), scale(B * G), sum(B * G),
        offset(B * G) {}
};

// x [B, K] into ``a``; inside an omp parallel region (ends with a barrier)
inline void a8_quantize(const float* x, int64_t K, A8Rows& a) {
#pragma omp for schedule(static)
  for (int64_t item = 0; item < a.B * a.G; ++item) {
    const int64_t i = item / a.G, g = item % a.G, k0 = g * A8_GROUP;
    const int64_t n = std::min<int64_t>(A8_GROUP, K - k0);
    const float* xg = x + i * K + k0;
    float top = 0.0f;
    for (int64_t k = 0; k < n; ++k) top = std::max(top, std::fabs(xg[k]));
    const float inverse = top > 0.0f ? 127.0f / top : 0.0f;
    int8_t* q = &a.codes[i * a.KP + k0];
    int32_t codes = 0;
    for (int64_t k = 0; k < n; ++k) codes += (q[k] = static_cast<int8_t>(std::nearbyint(xg[k] * inverse)));
    const float scale = top / 127.0f;
    a.scale[item] = scale, a.sum[item] = scale * static_cast<float>(codes), a.offset[item] = 128 * codes;
  }
}

// A panel of R weight rows, as the micro-kernels read it: per group g and quad q, the rows' 4-byte words side by
// side (words [G][QW][R]), so that one vector load gives V rows' codes of 4 inputs. int4 (QW = 4): the weight's own
// bytes (word q of a group holds inputs 4q .. 4q + 3 in its low nibbles, 16 + 4q .. in its high ones), unpacked in
// the kernel; int8 (QW = 8): the codes + 128 (``offset``: the VNNI paths) or the codes as they are (the plain
// paths). Scales and minimums per [G][R] (int4) or scales per [R] (int8); rows
// past N: codes, scales and minimums 0. Laid out per call for a weight used once (the Python side's prompt chunks),
// or once for all calls (A8Packed: the native decoder's weights, multiplied at every step).
struct A8Panel {
  int64_t R = 0, G = 0, QW = 0;
  std::vector<uint32_t> words;
  std::vector<float> scales, mins;
  A8Panel() = default;
  A8Panel(int64_t rows, int64_t groups, int bits)
      : R(rows), G(groups), QW(bits == 4 ? 4 : 8), words(G * QW * R), scales(G * R), mins(G * R) {}

  void fill(const QWeight& w, int64_t n0, bool offset) {
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = n0 + r;
      if (n >= w.N) {
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t q = 0; q < QW; ++q) words[(g * QW + q) * R + r] = 0;
          scales[g * R + r] = mins[g * R + r] = 0.0f;
        }
      } else if (w.bits == 4) {
        const uint8_t* row = w.q4 + n * G * (Q4_GROUP / 2);
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t q = 0; q < 4; ++q) std::memcpy(&words[(g * 4 + q) * R + r], row + g * 16 + 4 * q, 4);
          scales[g * R + r] = w.scales[n * G + g], mins[g * R + r] = w.mins[n * G + g];
        }
      } else {
        int8_row(w, n, r, offset ? 0x80 : 0);
      }
    }
  }

 private:
  void int8_row(const QWeight& w, int64_t n, int64_t r, uint8_t offset) {
    const uint32_t offsets = 0x01010101u * offset;
    const int8_t* row = w.q8 + n * w.K;
    for (int64_t g = 0; g < G; ++g)
      for (int64_t q = 0; q < 8; ++q) {
        const int64_t k0 = g * A8_GROUP + 4 * q;
        uint32_t word = 0;
        if (k0 + 4 <= w.K) {
          std::memcpy(&word, row + k0, 4);
          word ^= offsets;
        } else {
          uint8_t bytes[4] = {};
          for (int64_t t = 0; t < 4; ++t) bytes[t] = k0 + t < w.K ? static_cast<uint8_t>(row[k0 + t]) ^ offset : 0;
          std::memcpy(&word, bytes, 4);
        }
        words[(g * 8 + q) * R + r] = word;
      }
    scales[r] = w.scales[n];
  }
};

// A weight's panels of R rows, each laid out once: what the per-call layout costs is paid at load instead of at
// every step (it cost as much as the multiplies at 16 rows), for a second copy of the weight's codes, scales and
// minimums (the float32 and one-row kernels read the weight's own layout).
struct A8Packed {
  std::vector<A8Panel> panels;
  int64_t bytes() const {
    int64_t total = 0;
    for (const A8Panel& p : panels)
      total += static_cast<int64_t>(p.words.size() * 4 + (p.scales.size() + p.mins.size()) * sizeof(float));
    return total;
  }
};

// ``w``'s panels of R rows for a path that offsets int8 codes or not (outside any parallel region)
inline A8Packed a8_pack(const QWeight& w, int64_t R, bool offset, int threads) {
  A8Packed packed;
  const int64_t count = (w.N + R - 1) / R, G = (w.K + A8_GROUP - 1) / A8_GROUP;
  packed.panels.resize(count);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t index = 0; index < count; ++index) {
    packed.panels[index] = A8Panel(R, G, w.bits);
    packed.panels[index].fill(w, index * R, offset);
  }
  return packed;
}

}  // namespace

#if defined(__x86_64__) && defined(__AVX2__)
namespace {
// the integer vector operations of the kernels (int8_act_kernel.inc), one vector of V int32 lanes
#if defined(__AVX512F__)
using a8_ivec = __m512i;
inline a8_ivec a8_zero() { return _mm512_setzero_si512(); }
inline a8_ivec a8_load(const void* p) { return _mm512_loadu_si512(p); }
inline a8_ivec a8_broadcast(int32_t v) { return _mm512_set1_epi32(v); }
inline a8_ivec a8_sub(a8_ivec a, a8_ivec b) { return _mm512_sub_epi32(a, b); }
inline vf a8_float(a8_ivec a) { return (vf)_mm512_cvtepi32_ps(a); }
inline a8_ivec a8_low(a8_ivec a) { return _mm512_and_si512(a, _mm512_set1_epi8(15)); }  // each byte's low nibble
inline a8_ivec a8_high(a8_ivec a) { return _mm512_and_si512(_mm512_srli_epi16(a, 4), _mm512_set1_epi8(15)); }
#else
using a8_ivec = __m256i;
inline a8_ivec a8_zero() { return _mm256_setzero_si256(); }
inline a8_ivec a8_load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline a8_ivec a8_broadcast(int32_t v) { return _mm256_set1_epi32(v); }
inline a8_ivec a8_sub(a8_ivec a, a8_ivec b) { return _mm256_sub_epi32(a, b); }
inline vf a8_float(a8_ivec a) { return (vf)_mm256_cvtepi32_ps(a); }
inline a8_ivec a8_low(a8_ivec a) { return _mm256_and_si256(a, _mm256_set1_epi8(15)); }
inline a8_ivec a8_high(a8_ivec a) { return _mm256_and_si256(_mm256_srli_epi16(a, 4), _mm256_set1_epi8(15)); }
#endif

// each path's dot products: VNNI's one instruction, or the plain pair sums (u8 x s8 -> s16 pairs -> s32 quads);
// a8_abs / a8_signed: |w| and x with w's signs (x negated where w < 0; where w = 0, |w| makes the product 0)
#if defined(__AVX512F__)
#define LMCHAT_A8_VNNI "avx512vnni"
constexpr int A8_MI_VNNI = 6, A8_MI_PLAIN = 6;  // input rows per micro-kernel: 12 accumulators of 32 registers
__attribute__((target(LMCHAT_A8_VNNI))) inline a8_ivec a8_dot_vnni(a8_ivec acc, a8_ivec w, a8_ivec x) {
  return _mm512_dpbusd_epi32(acc, w, x);
}
inline a8_ivec a8_pairs(a8_ivec w, a8_ivec x) { return _mm512_maddubs_epi16(w, x); }  // u8 x s8 -> s16 pairs
inline a8_ivec a8_add16(a8_ivec a, a8_ivec b) { return _mm512_add_epi16(a, b); }
inline a8_ivec a8_widen(a8_ivec pairs) { return _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)); }  // s32 quads
inline a8_ivec a8_dot_plain(a8_ivec acc, a8_ivec w, a8_ivec x) {
  return _mm512_add_epi32(acc, a8_widen(a8_pairs(w, x)));
}
inline a8_ivec a8_abs(a8_ivec w) { return _mm512_abs_epi8(w); }
inline a8_ivec a8_signed(a8_ivec x, a8_ivec w) {  // AVX-512 has no vpsignb
  return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
}
#else
#define LMCHAT_A8_VNNI "avxvnni"
constexpr int A8_MI_VNNI = 2, A8_MI_PLAIN = 2;  // 16 vector registers (plain: two of them for the pair sums)
__attribute__((target(LMCHAT_A8_VNNI))) inline a8_ivec a8_dot_vnni(a8_ivec acc, a8_ivec w, a8_ivec x) {
  return _mm256_dpbusd_avx_epi32(acc, w, x);
}
inline a8_ivec a8_pairs(a8_ivec w, a8_ivec x) { return _mm256_maddubs_epi16(w, x); }
inline a8_ivec a8_add16(a8_ivec a, a8_ivec b) { return _mm256_add_epi16(a, b); }
inline a8_ivec a8_widen(a8_ivec pairs) { return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)); }
inline a8_ivec a8_dot_plain(a8_ivec acc, a8_ivec w, a8_ivec x) {
  return _mm256_add_epi32(acc, a8_widen(a8_pairs(w, x)));
}
inline a8_ivec a8_abs(a8_ivec w) { return _mm256_abs_epi8(w); }
inline a8_ivec a8_signed(a8_ivec x, a8_ivec w) { return _mm256_sign_epi8(x, w); }
#endif
inline bool a8_has_vnni() { return __builtin_cpu_supports(LMCHAT_A8_VNNI); }

// the kernels once per path, each compiled for its instructions
#define LMCHAT_A8_TARGET __attribute__((target(LMCHAT_A8_VNNI)))
// OFFSET8: int8 weights offset by 128 (the panels' words; the offset's share taken off per group); idot8 adds the
// dot products of an int8 weight vector ``w`` (|w| in ``magnitude``) with x. PAIRS16: int4 weights' pair sums
// added in 16 bits over a group and widened to 32 once (the plain paths: one instruction per 4-way dot product
// fewer; 8 quads of pairs of 15 * 127 fit in 16 bits)
namespace a8_vnni {
constexpr int MI = A8_MI_VNNI, NW = 2;
constexpr bool OFFSET8 = true, PAIRS16 = false;
LMCHAT_A8_TARGET inline a8_ivec idot(a8_ivec acc, a8_ivec w, a8_ivec x) { return a8_dot_vnni(acc, w, x); }
LMCHAT_A8_TARGET inline a8_ivec magnitude8(a8_ivec w) { return w; }
LMCHAT_A8_TARGET inline a8_ivec idot8(a8_ivec acc, a8_ivec w, a8_ivec, a8_ivec x) { return a8_dot_vnni(acc, w, x); }
#include "int8_act_kernel.inc"
}  // namespace a8_vnni
#undef LMCHAT_A8_TARGET
#define LMCHAT_A8_TARGET
namespace a8_plain {
constexpr int MI = A8_MI_PLAIN, NW = 2;
constexpr bool OFFSET8 = false, PAIRS16 = true;
inline a8_ivec idot(a8_ivec acc, a8_ivec w, a8_ivec x) { return a8_dot_plain(acc, w, x); }
inline a8_ivec magnitude8(a8_ivec w) { return a8_abs(w); }
inline a8_ivec idot8(a8_ivec acc, a8_ivec w, a8_ivec magnitude, a8_ivec x) {
  return a8_dot_plain(acc, magnitude, a8_signed(x, w));
}
#include "int8_act_kernel.inc"
}  // namespace a8_plain
#undef LMCHAT_A8_TARGET

// the best int8 path of this CPU (CPUID, read once)
inline A8Path a8_best() {
  static const A8Path best = a8_has_vnni() ? A8Path::Vnni : A8Path::Plain;
  return best;
}

}  // namespace
#else
namespace {
inline A8Path a8_best() { return A8Path::None; }
}  // namespace
#endif

namespace {

// whether ``path`` multiplies weights (of 4 or 8 bits) here
inline bool a8_serves(A8Path path, int bits) {
  if (path == A8Path::None || (path == A8Path::Vnni && a8_best() != A8Path::Vnni)) return false;
  return bits == 4 || bits == 8;
}

// whether ``path`` keeps int8 weights offset by 128 in its panels
inline bool a8_offsets(A8Path path) { return path == A8Path::Vnni; }

// the rows of one panel of the kernels (the same for every path of a build)
inline int64_t a8_panel_rows() {
#if defined(__x86_64__) && defined(__AVX2__)
  static_assert(a8_vnni::NW == a8_plain::NW, "one panel layout for every path");
  return a8_vnni::NW * V;
#else
  return 0;
#endif
}

// y [B, ldy] (=|+=) x [B, K] W^T (+ bias) with x rounded to int8 (``a`` sized for B rows of K, ``path`` served:
// see a8_serves), over ``packed`` panels of W (a8_pack) or, when null, panels laid out on the way; inside an omp
// parallel region (ends with a barrier)
inline void a8_gemm(A8Path path, const QWeight& w, const float* x, A8Rows& a, float* y, int64_t ldy,
                    const float* bias, const A8Packed* packed, Store mode = Store::Set) {
  a8_quantize(x, w.K, a);
#if defined(__x86_64__) && defined(__AVX2__)
  if (path == A8Path::Vnni) a8_vnni::gemm(w, a, y, ldy, bias, packed, mode);
  else a8_plain::gemm(w, a, y, ldy, bias, packed, mode);
#else
  (void)path, (void)y, (void)ldy, (void)bias, (void)packed, (void)mode;
#endif
}

}  // namespace
