// The one-token decode step of a Llama-family model in float32 on the CPU, as one native call (and prompt chunks
// of one or several cache rows, the same way: Decoder::step's cache_rows and logits_rows).
//
// Between its weight multiplies, a decode step runs many small tensor ops per layer; each multiply has just
// streamed megabytes of weights through the CPU caches, so every framework op after it starts cold (measured in
// docs/architecture-hf-engine.md). Here the small work is a few tight loops per layer (RMSNorm, RoPE, keys and
// values into the slot cache, attention over each row's own positions, SiLU-gate, residuals):
//
// * one row: GEMVs split by output rows over the threads, all inside one OpenMP region (PyTorch's own libgomp
//   pool): each weight is read once, at the memory bandwidth;
// * two rows or more: oneDNN multiplies over the lean forward's packed weights (ATen's linear if unpacked).
// * weight-only quantized weights (quantization_bit 8 or 4): this file's own kernels, for one row and for many.
//
// The weights come by name (lean.LeanDecoder.use_native): per layer norm1, qkv, qkv_bias (optional), out, norm2,
// gate_up, down and their oneDNN-packed copies qkv_packed, out_packed, gate_up_packed, down_packed (optional);
// for the model embed, norm, head, head_packed (optional). A quantized multiply comes as NAME_codes and
// NAME_scales (and NAME_mins for int4) instead of NAME; quantized embeddings as embed_codes and embed_scales. An unknown or missing name is an error naming it.
//
// Built on first use by lmchat.engines.hf.native (torch.utils.cpp_extension); see docs/architecture-hf-engine.md.

#include <torch/extension.h>
#include <omp.h>

#include "quantized.h"
#include "int8_act.h"
#include "attention.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace {

constexpr int64_t LANES = 16;  // one 512-bit (or two 256-bit) vector of floats per accumulator

using Named = std::map<std::string, at::Tensor>;

// Tensors handed over by name: take() each one the caller must give, maybe() the optional ones, then done()
// fails on any name that was not taken (a misspelt or unexpected weight is an error, never ignored).
class Weights {
 public:
  Weights(Named tensors, std::string what) : tensors_(std::move(tensors)), what_(std::move(what)) {}

  at::Tensor take(const std::string& name) {
    auto found = tensors_.find(name);
    TORCH_CHECK(found != tensors_.end(), what_, " has no weight named '", name, "'");
    taken_.insert(name);
    return found->second;
  }

  // a contiguous float32 weight, as the GEMVs and loops read it
  at::Tensor take_plain(const std::string& name) {
    at::Tensor t = take(name);
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == at::kFloat, what_, ": '", name,
                "' must be a contiguous float32 tensor");
    return t;
  }

  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const std::string& what() const { return what_; }

  at::Tensor maybe(const std::string& name, bool plain = false) {
    if (!tensors_.count(name)) return at::Tensor();
    return plain ? take_plain(name) : take(name);
  }

  void done() const {
    for (const auto& [name, tensor] : tensors_)
      TORCH_CHECK(taken_.count(name), what_, " has an unknown weight named '", name, "'");
  }

 private:
  Named tensors_;
  std::string what_;
  std::set<std::string> taken_;
};

template <typename T>
T named(const std::map<std::string, T>& values, const std::string& name) {
  auto found = values.find(name);
  TORCH_CHECK(found != values.end(), "the decoder's settings have no '", name, "'");
  return found->second;
}

inline const float* f32(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// w[r] . x for R consecutive weight rows of length K: 16 lanes per row, reduced in a fixed order
template <int R>
inline void dot_rows(const float* w, int64_t K, const float* x, float out[R]) {
  float acc[R][LANES] = {};
  int64_t k = 0;
  for (; k + LANES <= K; k += LANES) {
    for (int r = 0; r < R; ++r) {
      const float* wr = w + r * K + k;
#pragma omp simd
      for (int64_t j = 0; j < LANES; ++j) acc[r][j] += wr[j] * x[k + j];
    }
  }
  for (int r = 0; r < R; ++r) {
    float* a = acc[r];
    for (int64_t width = LANES / 2; width > 0; width /= 2)
      for (int64_t j = 0; j < width; ++j) a[j] += a[j + width];
    float sum = a[0];
    for (int64_t t = k; t < K; ++t) sum += w[r * K + t] * x[t];
    out[r] = sum;
  }
}

// y[n] (=|+=) W[n] . x (+ bias[n]) for the N rows of W, split over the threads; call inside an omp parallel
// region (it ends with a barrier: y is complete for every thread afterwards)
void gemv(const float* W, const float* bias, int64_t N, int64_t K, const float* x, float* y, Store mode) {
  constexpr int R = 4;  // weight rows per pass
  const int64_t blocks = N / R;
#pragma omp for schedule(static) nowait
  for (int64_t block = 0; block < blocks; ++block) {
    float out[R];
    dot_rows<R>(W + block * R * K, K, x, out);
    for (int r = 0; r < R; ++r) store(y, block * R + r, out[r], bias, mode);
  }
#pragma omp for schedule(static)
  for (int64_t n = blocks * R; n < N; ++n) {
    float out[1];
    dot_rows<1>(W + n * K, K, x, out);
    store(y, n, out[0], bias, mode);
  }
}

void rms_norm(const float* x, const float* weight, int64_t D, float eps, float* out) {
  const float scale = 1.0f / std::sqrt(sum_squares(x, D) / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i) out[i] = weight[i] * (x[i] * scale);
}

// x * cos + rotate_half(x) * sin, with ``sin`` carrying rotate_half's sign (see lean._grow_rope)
void rope(const float* x, const float* cos, const float* sin, int64_t dim, float* out) {
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < dim; ++i) out[i] = x[i] * cos[i] + x[i < half ? i + half : i - half] * sin[i];
}

// Where one step reads and writes: the sizes, the rows' positions, the cache and the scratch buffers.
struct Step {
  int64_t rows, D, H, KV, hd, I, qkv_size, max_length, row_stride, head_stride;
  const int64_t* cache_rows;  // token b's cache row from the step's first (nullptr: b)
  float scaling;
  const int64_t* pos;
  const int64_t* slots;  // each row's LoRA adapter slot (0: none), or nullptr: no adapter in this step
  const float *cos, *sin;
  float *kcache, *vcache;  // this layer's cache, at the step's first row
  float *qkv, *query, *attended, *gate_up, *act;
};

// token b's cache row, from the step's first
inline int64_t cache_row(const Step& s, int64_t b) { return s.cache_rows ? s.cache_rows[b] : b; }

// RoPE on one query or key head of one row; keys and values go to the row's own position in the cache
void rope_and_store(const Step& s, int64_t item) {
  const int64_t b = item / (s.H + s.KV), head = item % (s.H + s.KV);
  const float* src = s.qkv + b * s.qkv_size + head * s.hd;
  const float* c = s.cos + s.pos[b] * s.hd;
  const float* sn = s.sin + s.pos[b] * s.hd;
  if (head < s.H) {
    rope(src, c, sn, s.hd, s.query + (b * s.H + head) * s.hd);
  } else {
    const int64_t offset = cache_row(s, b) * s.row_stride + (head - s.H) * s.head_stride + s.pos[b] * s.hd;
    rope(src, c, sn, s.hd, s.kcache + offset);
    std::copy_n(src + s.KV * s.hd, s.hd, s.vcache + offset);
  }
}

// the query heads of one row that share kv head ``kv``, over that row's positions 0..pos; ``scores``: the calling
// thread's scratch of heads x max_length floats
void attend(const Step& s, int64_t b, int64_t kv, int64_t first, int64_t heads, float* scores) {
  const int64_t G = s.H / s.KV, head = b * s.H + kv * G + first;
  const int64_t kv_offset = cache_row(s, b) * s.row_stride + kv * s.head_stride;
  attend_group(s.query + head * s.hd, s.kcache + kv_offset, s.vcache + kv_offset, s.pos[b] + 1, s.hd, s.scaling,
               heads, scores, s.max_length, s.attended + head * s.hd);
}

// SwiGLU for row b
void silu_gate(const Step& s, int64_t b) {
  const float* gate = s.gate_up + b * 2 * s.I;
  silu_gate_row(gate, gate + s.I, s.I, s.act + b * s.I);
}

// x @ W^T (+ bias) for a batch: oneDNN's packed multiply when the weight is packed (a row's result does not
// depend on the batch size), else ATen's linear
at::Tensor batch_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const bool has_bias = bias.defined() && bias.numel() > 0;
  if (weight.is_mkldnn()) {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    std::vector<c10::IValue> stack{x, weight, has_bias ? c10::IValue(bias) : c10::IValue(), c10::IValue("none"),
                            c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue("")};
    op.callBoxed(&stack);
    return stack[0].toTensor();
  }
  return has_bias ? at::linear(x, weight, bias) : at::linear(x, weight);
}

// From this many rows on (long prompt chunks), a float32 copy of the weight for the call and ATen's GEMM: MKL's
// blocked GEMM beats this file's micro-kernels there, and the copy costs a fraction of the multiply.
constexpr int64_t DEQUANTIZE_ROWS = 128;

using LoraPairs = std::map<int64_t, std::pair<at::Tensor, at::Tensor>>;  // slot -> (A^T [K, r], B^T [r, N])

// From how many rows on a quantized multiply takes int8 activations (when asked for and served; int8_act.h): with
// the panels laid out once (the decoder's weights), from one row on (a one-row step: a third of the instructions
// of the float32 GEMV, the same bytes read; benchmarks/bench_native_step.py); laid out per call, where that beats
// the float32 kernels (benchmarks/bench_qgemm.py; an int8 weight's panels cost more to lay out)
inline int64_t a8_rows(int bits, bool laid_out) { return laid_out ? 1 : bits == 4 ? 4 : 12; }

struct Linear {
  at::Tensor plain, batch_w, codes, scales, mins;  // kept alive
  LoraPairs lora;
  QWeight q;
  A8Path activations = A8Path::None;  // batched multiplies of a quantized weight: float32 or int8 activations
  A8Packed packed;  // the int8 kernels' panels of the weight, laid out once (pack), or none: laid out per call
  const float* weight = nullptr;
  int64_t N = 0, K = 0;

  Linear() = default;
  Linear(Weights& w, const std::string& name) {
    plain = w.maybe(name, true);
    if (plain.defined()) {
      at::Tensor packed = w.maybe(name + "_packed");
      batch_w = packed.defined() ? packed : plain;
      weight = plain.data_ptr<float>(), N = plain.size(0), K = plain.size(1);
      return;
    }
    TORCH_CHECK(w.has(name + "_codes"), w.what(), " has no weight named '", name, "' (nor its quantized '", name,
                "_codes')");
    codes = w.take(name + "_codes"), scales = w.take(name + "_scales"), mins = w.maybe(name + "_mins");
    q = quantized(codes, scales, mins, name);
    N = q.N, K = q.K;
  }

  // batched multiplies with ``path``'s activations, over panels laid out here once where int8 ones serve
  void pack(A8Path path) {
    activations = path;
    packed = q.bits && a8_serves(path, q.bits)
                 ? a8_pack(q, a8_panel_rows(), a8_offsets(path), at::get_num_threads()) : A8Packed();
  }

  // whether the int8 kernels' panels are laid out (pack found int8 activations served)
  bool laid_out() const { return !packed.panels.empty(); }

  // the float32 weight (made per call: for many rows the multiply costs far more than this)
  at::Tensor dequantize() const {
    at::Tensor w = at::empty({N, K}, at::kFloat);
    float* out = w.data_ptr<float>();
    const QWeight qw = q;
#pragma omp parallel for num_threads(at::get_num_threads()) schedule(static)
    for (int64_t n = 0; n < qw.N; ++n) dequantize_row(qw, n, 0, qw.K, out + n * qw.K);
    return w;
  }

  // named LoRA adapters (lmchat.engines.hf.lora): y[b] += B_s (A_s x[b]) for a row whose adapter slot s has an
  // update here (a rank-r pair of small multiplies per row: far less work than the weight's own)
  void add_lora_row(int64_t slot, const float* x, float* y) const {
    const auto found = slot ? lora.find(slot) : lora.end();
    if (found == lora.end()) return;
    const float* a = found->second.first.data_ptr<float>();
    const float* b = found->second.second.data_ptr<float>();
    const int64_t r = found->second.first.size(1);
    std::vector<float> t(r, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float xk = x[k];
#pragma omp simd
      for (int64_t j = 0; j < r; ++j) t[j] += xk * a[k * r + j];
    }
    for (int64_t j = 0; j < r; ++j) {
      const float tj = t[j];
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) y[n] += tj * b[j * N + n];
    }
  }

  // the same for B rows (x [B, K], y [B, ldy]), the rows over the threads; outside any parallel region
  void add_lora(const int64_t* slots, int64_t B, const float* x, float* y, int64_t ldy) const {
    if (lora.empty() || slots == nullptr) return;
#pragma omp parallel for num_threads(at::get_num_threads()) schedule(static)
    for (int64_t b = 0; b < B; ++b) add_lora_row(slots[b], x + b * K, y + b * ldy);
  }

  void set_lora(LoraPairs pairs, const std::string& what) {
    for (const auto& [slot, pair] : pairs) {
      const auto& [a, b] = pair;
      TORCH_CHECK(slot > 0 && a.dim() == 2 && b.dim() == 2 && a.size(0) == K && b.size(1) == N &&
                  a.size(1) == b.size(0) && a.is_contiguous() && b.is_contiguous() &&
                  a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
                  what, ": a LoRA update is A^T [", K, ", r] and B^T [r, ", N, "], contiguous float32, for a slot > 0");
    }
    lora = std::move(pairs);
  }

  // inside an omp parallel region: y (=|+=) W x (+ bias) for one row; over the laid-out panels (int8 activations
  // served) with the int8 kernels, ``a`` the scratch of one row of K inputs
  void row(const float* x, float* y, const float* bias, Store mode, float* xsum, A8Rows& a) const {
    if (laid_out()) a8_gemm(activations, q, x, a, y, N, bias, &packed, mode);
    else if (q.bits) q_linear(q, 1, x, y, N, bias, mode, xsum);
    else gemv(weight, bias, N, K, x, y, mode);
  }

  // x [B, K] -> [B, N] (+ bias), outside any parallel region
  at::Tensor batch(const at::Tensor& x, const at::Tensor& bias) const {
    if (!q.bits) return batch_linear(x, batch_w, bias);
    const int64_t B = x.size(0);
    const float* b = bias.defined() && bias.numel() ? bias.data_ptr<float>() : nullptr;
    if (B >= a8_rows(q.bits, laid_out()) && a8_serves(activations, q.bits)) {
      at::Tensor y = at::empty({B, N}, at::kFloat);
      A8Rows rows(B, K);
#pragma omp parallel num_threads(at::get_num_threads())
      a8_gemm(activations, q, x.data_ptr<float>(), rows, y.data_ptr<float>(), N, b,
              laid_out() ? &packed : nullptr);
      return y;
    }
    if (B >= DEQUANTIZE_ROWS) return batch_linear(x, dequantize(), bias);
    at::Tensor y = at::empty({B, N}, at::kFloat);
    std::vector<float> xsum(B * (K / Q4_GROUP) + 1);
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    if (B >= gemm_rows(q.bits)) {
      std::vector<float> xT(gemm_scratch(B, K));
#pragma omp parallel num_threads(at::get_num_threads())
      q_gemm(q, B, xp, xT.data(), yp, N, b);
      return y;
    }
#pragma omp parallel num_threads(at::get_num_threads())
    q_linear(q, B, xp, yp, N, b, Store::Set, xsum.data());
    return y;
  }
};

// inside an omp parallel region (every thread calls it): one row's LoRA update, by one thread, then a barrier
inline void lora_single(const Linear& linear, int64_t slot, const float* x, float* y) {
  if (slot == 0 || linear.lora.empty()) return;
#pragma omp single
  linear.add_lora_row(slot, x, y);
}

struct Layer {
  at::Tensor norm1_t, norm2_t, qkv_bias_t;  // kept alive
  const float *norm1, *norm2, *qkv_bias;
  Linear qkv, out, gate_up, down;

  explicit Layer(Weights w)
      : norm1_t(w.take_plain("norm1")), norm2_t(w.take_plain("norm2")), qkv_bias_t(w.maybe("qkv_bias", true)),
        qkv(w, "qkv"), out(w, "out"), gate_up(w, "gate_up"), down(w, "down") {
    norm1 = f32(norm1_t), norm2 = f32(norm2_t), qkv_bias = f32(qkv_bias_t);
    w.done();
  }

  // the layer's multiplies, in order
  std::array<Linear*, 4> linears() { return {&qkv, &out, &gate_up, &down}; }
  std::array<const Linear*, 4> linears() const { return {&qkv, &out, &gate_up, &down}; }

  Linear& site(const std::string& name) {
    if (name == "qkv") return qkv;
    if (name == "out") return out;
    if (name == "gate_up") return gate_up;
    TORCH_CHECK(name == "down", "a layer's LoRA sites are qkv, out, gate_up and down, not '", name, "'");
    return down;
  }
};

// The activations of batched quantized multiplies, by name: "float32", "int8" (this CPU's best int8 path),
// "int8-vnni" or "int8-plain" (that path; an error where the CPU or build has none)
A8Path activation_path(const std::string& name) {
  if (name == "float32") return A8Path::None;
  const A8Path best = a8_best();
  TORCH_CHECK(best != A8Path::None || name.rfind("int8", 0) != 0,
              "int8 activations need an x86-64 CPU with AVX2 (this build has no int8 kernels)");
  if (name == "int8") return best;
  if (name == "int8-plain") return A8Path::Plain;
  TORCH_CHECK(name == "int8-vnni", "activations are float32, int8, int8-vnni or int8-plain, not '", name, "'");
  TORCH_CHECK(best == A8Path::Vnni, "int8-vnni activations need a CPU with VNNI dot products (AVX512-VNNI or "
              "AVX-VNNI); this one has none");
  return A8Path::Vnni;
}

// the int8 paths this CPU runs, best first (what "int8" picks; empty: none)
std::vector<std::string> int8_paths() {
  const A8Path best = a8_best();
  if (best == A8Path::None) return {};
  if (best == A8Path::Vnni) return {"int8-vnni", "int8-plain"};
  return {"int8-plain"};
}

// For the Python side (lean prompt chunks, the model's own modules): x [M, K] float32 -> [M, N]; pack: lay out
// the int8 kernels' panels first, as the decoder does (the same numbers)
at::Tensor qlinear(const at::Tensor& x_in, const at::Tensor& codes, const at::Tensor& scales,
                   const std::optional<at::Tensor>& mins, const std::optional<at::Tensor>& bias,
                   const std::string& activations, bool pack) {
  c10::InferenceMode guard;
  Linear linear;
  linear.activations = activation_path(activations);
  linear.codes = codes, linear.scales = scales, linear.mins = mins.has_value() ? *mins : at::Tensor();
  linear.q = quantized(codes, scales, linear.mins, "qlinear");
  linear.N = linear.q.N, linear.K = linear.q.K;
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == linear.K && x_in.scalar_type() == at::kFloat,
              "qlinear: x must be float32 [M, ", linear.K, "]");
  at::Tensor b = bias.has_value() ? *bias : at::Tensor();
  TORCH_CHECK(!b.defined() || (b.scalar_type() == at::kFloat && b.numel() == linear.N && b.is_contiguous()),
              "qlinear: bias must be float32 [", linear.N, "]");
  if (pack) linear.pack(linear.activations);  // the decoder's way: panels laid out once, then multiplied
  return linear.batch(x_in.contiguous(), b);
}

class Decoder {
 public:
  // layers: each layer's weights by name; model: embed, norm, head (and head_packed); sizes: heads, kv_heads,
  // head_dim, intermediate; scalars: scaling, eps (see the names at the top of this file)
  // activations: of the batched quantized multiplies (see activation_path)
  Decoder(std::vector<Named> layers, Named model, std::map<std::string, int64_t> sizes,
          std::map<std::string, double> scalars, const std::string& activations) {
    const A8Path path = activation_path(activations);
    heads_ = named(sizes, "heads"), kv_heads_ = named(sizes, "kv_heads"), head_dim_ = named(sizes, "head_dim");
    inter_ = named(sizes, "intermediate");
    TORCH_CHECK(sizes.size() == 4, "the decoder's sizes are heads, kv_heads, head_dim and intermediate only");
    scaling_ = static_cast<float>(named(scalars, "scaling")), eps_ = static_cast<float>(named(scalars, "eps"));
    TORCH_CHECK(scalars.size() == 2, "the decoder's scalars are scaling and eps only");
    Weights weights(std::move(model), "the model");
    embed_ = weights.maybe("embed", true), norm_ = weights.take_plain("norm"), head_ = Linear(weights, "head");
    if (!embed_.defined()) {  // int8 rows (quant.QuantizedEmbedding)
      embed_codes_ = weights.take("embed_codes"), embed_scales_ = weights.take("embed_scales");
      TORCH_CHECK(embed_codes_.scalar_type() == at::kChar && embed_codes_.dim() == 2 && embed_codes_.is_contiguous() &&
                  embed_scales_.scalar_type() == at::kFloat && embed_scales_.numel() == embed_codes_.size(0),
                  "the model: embed_codes must be int8 [vocab, hidden] with float32 embed_scales [vocab]");
    }
    weights.done();
    const at::Tensor& rows = embed_.defined() ? embed_ : embed_codes_;
    embed_rows_ = rows.size(0), hidden_ = rows.size(1), vocab_ = head_.N;
    for (size_t i = 0; i < layers.size(); ++i)
      layers_.emplace_back(Weights(std::move(layers[i]), "layer " + std::to_string(i)));
    head_.pack(path);
    for (Layer& layer : layers_)
      for (Linear* linear : layer.linears()) linear->pack(path);
  }

  // the bytes of the int8 kernels' panels (the second copy of the quantized weights that int8 activations keep)
  int64_t packed_bytes() const {
    int64_t total = head_.packed.bytes();
    for (const Layer& layer : layers_)
      for (const Linear* linear : layer.linears()) total += linear->packed.bytes();
    return total;
  }

  // tokens [B], positions [B]; batch row b is cache row row_start + b and attends to positions 0..positions[b]
  // layers: per layer, site name -> slot -> (A^T, B^T); head: the same for the output head (replaces the last)
  void set_lora(std::vector<std::map<std::string, LoraPairs>> layers, LoraPairs head) {
    TORCH_CHECK(layers.size() == layers_.size(), "one LoRA entry per layer");
    for (size_t l = 0; l < layers_.size(); ++l) {
      for (const char* name : {"qkv", "out", "gate_up", "down"}) layers_[l].site(name).lora.clear();
      for (auto& [name, pairs] : layers[l]) layers_[l].site(name).set_lora(std::move(pairs), "layer " + std::to_string(l) + " " + name);
    }
    head_.set_lora(std::move(head), "head");
  }

  // slots: each row's adapter slot (int64 [B]), or empty when no row has one
  // cache_rows (int64 [B], or empty: token b in row b): token b's cache row, from row_start. Prompt chunks are
  // tokens of one row at consecutive positions: each token's key and value are stored before any attends, and a
  // token attends to its row's positions 0..its own, so chunks of several rows go in one call.
  // logits_rows (int64 [n], or empty: all): the tokens whose logits are returned ([n, vocab]; a chunk's last)
  at::Tensor step(const at::Tensor& tokens_t, const at::Tensor& positions_t, int64_t row_start,
                  const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values, const at::Tensor& cos,
                  const at::Tensor& sin, const at::Tensor& slots_t, const std::optional<at::Tensor>& cache_rows_in,
                  const std::optional<at::Tensor>& logits_rows_in) {
    c10::InferenceMode guard;
    const int64_t rows = tokens_t.size(0);
    auto tokens = tokens_t.contiguous().to(at::kLong), positions = positions_t.contiguous().to(at::kLong);
    const int64_t* tok = tokens.data_ptr<int64_t>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    int64_t max_length = 0;
    TORCH_CHECK(rows >= 1 && positions.numel() == rows, "one position per token");
    TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == at::kFloat &&
                sin.sizes() == cos.sizes() && cos.dim() == 2 && cos.size(1) == head_dim_,
                "rotary tables [positions, head_dim] float32");
    for (int64_t b = 0; b < rows; ++b) {
      TORCH_CHECK(tok[b] >= 0 && tok[b] < embed_rows_, "token id out of range");
      TORCH_CHECK(pos[b] >= 0 && pos[b] < cos.size(0), "position beyond the rotary table");
      max_length = std::max(max_length, pos[b] + 1);
    }
    TORCH_CHECK(keys.size() == layers_.size() && values.size() == layers_.size(), "one key/value tensor per layer");
    auto indices = [](const std::optional<at::Tensor>& given) {  // int64, contiguous; empty when not given
      return given && given->numel() ? given->contiguous().to(at::kLong) : at::empty({0}, at::kLong);
    };
    const at::Tensor cache_rows = indices(cache_rows_in), logits_rows = indices(logits_rows_in);
    TORCH_CHECK(cache_rows.numel() == 0 || cache_rows.numel() == rows, "one cache row per token, or none");
    int64_t last_row = rows - 1;  // the highest cache row written, from row_start
    if (cache_rows.numel()) {
      last_row = 0;
      for (int64_t b = 0; b < rows; ++b) {
        TORCH_CHECK(cache_rows.data_ptr<int64_t>()[b] >= 0, "cache rows count from row_start: none below 0");
        last_row = std::max(last_row, cache_rows.data_ptr<int64_t>()[b]);
      }
    }
    for (int64_t i = 0; i < logits_rows.numel(); ++i)
      TORCH_CHECK(logits_rows.data_ptr<int64_t>()[i] >= 0 && logits_rows.data_ptr<int64_t>()[i] < rows,
                  "logits rows are token indices of this step");
    for (size_t l = 0; l < keys.size(); ++l) {
      for (const auto* cache : {&keys[l], &values[l]}) {
        TORCH_CHECK(cache->is_contiguous() && cache->scalar_type() == at::kFloat && cache->dim() == 4 &&
                    cache->size(0) > row_start + last_row && cache->size(1) == kv_heads_ &&
                    cache->size(2) >= max_length && cache->size(3) == head_dim_,
                    "slot cache layout [rows, kv_heads, capacity, head_dim] float32");
      }
    }
    const int64_t H = heads_, KV = kv_heads_, hd = head_dim_, I = inter_, capacity = keys[0].size(2);
    at::Tensor slots = slots_t.numel() ? slots_t.contiguous().to(at::kLong) : slots_t;
    TORCH_CHECK(slots.numel() == 0 || slots.numel() == rows, "one adapter slot per row, or none");
    TORCH_CHECK(logits_rows.numel() == 0 || slots.numel() == 0, "picked logits rows take no adapter slots");
    Step s{rows, hidden_, H, KV, hd, I, (H + 2 * KV) * hd, max_length, KV * capacity * hd, capacity * hd,
           cache_rows.numel() ? cache_rows.data_ptr<int64_t>() : nullptr, scaling_, pos,
           slots.numel() ? slots.data_ptr<int64_t>() : nullptr, cos.data_ptr<float>(), sin.data_ptr<float>()};
    at::Tensor hidden = at::empty({rows, hidden_}, at::kFloat);
    for (int64_t b = 0; b < rows; ++b) embed_row(tok[b], hidden.data_ptr<float>() + b * hidden_);
    if (rows == 1) return single(s, hidden, row_start, keys, values);
    return batched(s, hidden, row_start, keys, values, logits_rows);
  }

 private:
  void embed_row(int64_t token, float* out) const {
    if (embed_.defined()) {
      std::copy_n(embed_.data_ptr<float>() + token * hidden_, hidden_, out);
      return;
    }
    const int8_t* codes = embed_codes_.data_ptr<int8_t>() + token * hidden_;
    const float scale = embed_scales_.data_ptr<float>()[token];
    for (int64_t k = 0; k < hidden_; ++k) out[k] = static_cast<float>(codes[k]) * scale;
  }

  void point_at_layer(Step& s, size_t l, int64_t row_start, const std::vector<at::Tensor>& keys,
                      const std::vector<at::Tensor>& values) const {
    s.kcache = keys[l].data_ptr<float>() + row_start * s.row_stride;
    s.vcache = values[l].data_ptr<float>() + row_start * s.row_stride;
  }

  // one row: GEMVs (memory-bound: each weight read once) and everything else in one OpenMP region
  at::Tensor single(Step s, at::Tensor& hidden_t, int64_t row_start, const std::vector<at::Tensor>& keys,
                    const std::vector<at::Tensor>& values) {
    const int64_t D = s.D, H = s.H, hd = s.hd, I = s.I;
    at::Tensor logits_t = at::empty({1, vocab_}, at::kFloat);
    std::vector<float> x(D), qkv(s.qkv_size), query(H * hd), attended(H * hd), gate_up(2 * I), act(I),
        xsum(std::max(D, I) / Q4_GROUP + 1);
    A8Rows a_hidden(1, D), a_attended(1, H * hd), a_act(1, I);  // the int8 kernels' rounded inputs
    s.qkv = qkv.data(), s.query = query.data(), s.attended = attended.data(), s.gate_up = gate_up.data();
    s.act = act.data();
    float* hidden = hidden_t.data_ptr<float>();
    float* logits = logits_t.data_ptr<float>();
    const int64_t slot = s.slots ? s.slots[0] : 0;
#pragma omp parallel num_threads(at::get_num_threads()) firstprivate(s)
    {
      std::vector<float> scores(s.max_length);  // this thread's, for one head at a time
      for (size_t l = 0; l < layers_.size(); ++l) {
        const Layer& layer = layers_[l];
        point_at_layer(s, l, row_start, keys, values);
#pragma omp single
        rms_norm(hidden, layer.norm1, D, eps_, x.data());
        layer.qkv.row(x.data(), s.qkv, layer.qkv_bias, Store::Set, xsum.data(), a_hidden);
        lora_single(layer.qkv, slot, x.data(), s.qkv);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < H + s.KV; ++item) rope_and_store(s, item);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < H; ++item)
          attend(s, 0, item / (H / s.KV), item % (H / s.KV), 1, scores.data());
        layer.out.row(s.attended, hidden, nullptr, Store::Add, xsum.data(), a_attended);
        lora_single(layer.out, slot, s.attended, hidden);
#pragma omp single
        rms_norm(hidden, layer.norm2, D, eps_, x.data());
        layer.gate_up.row(x.data(), s.gate_up, nullptr, Store::Set, xsum.data(), a_hidden);
        lora_single(layer.gate_up, slot, x.data(), s.gate_up);
#pragma omp for simd schedule(simd : static)  // the inputs split over the threads in whole vectors
        for (int64_t i = 0; i < I; ++i) s.act[i] = silu_gate_value(s.gate_up[i], s.gate_up[I + i]);
        layer.down.row(s.act, hidden, nullptr, Store::Add, xsum.data(), a_act);
        lora_single(layer.down, slot, s.act, hidden);
      }
#pragma omp single
      rms_norm(hidden, norm_.data_ptr<float>(), D, eps_, x.data());
      head_.row(x.data(), logits, nullptr, Store::Set, xsum.data(), a_hidden);
      lora_single(head_, slot, x.data(), logits);
    }
    return logits_t;
  }

  // two rows or more: oneDNN multiplies over the packed weights (faster than GEMVs from 2 rows on, and a row's
  // result does not depend on the batch size), the work between them in parallel loops
  // logits_rows: the tokens whose logits are returned (empty: all)
  at::Tensor batched(Step s, at::Tensor& hidden_t, int64_t row_start, const std::vector<at::Tensor>& keys,
                     const std::vector<at::Tensor>& values, const at::Tensor& logits_rows) {
    const int64_t B = s.rows, D = s.D, H = s.H, hd = s.hd, I = s.I;
    const int threads = at::get_num_threads();
    at::Tensor x_t = at::empty({B, D}, at::kFloat), query_t = at::empty({B, H * hd}, at::kFloat);
    at::Tensor attended_t = at::empty({B, H * hd}, at::kFloat), act_t = at::empty({B, I}, at::kFloat);
    s.query = query_t.data_ptr<float>(), s.attended = attended_t.data_ptr<float>(), s.act = act_t.data_ptr<float>();
    float* hidden = hidden_t.data_ptr<float>();
    float* x = x_t.data_ptr<float>();
    auto norm_rows = [&](const float* weight) {
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t b = 0; b < B; ++b) rms_norm(hidden + b * D, weight, D, eps_, x + b * D);
    };
    auto with_lora = [&](const Linear& linear, const at::Tensor& in, at::Tensor out) {
      linear.add_lora(s.slots, B, in.data_ptr<float>(), out.data_ptr<float>(), linear.N);
      return out;
    };
    auto add_rows = [&](const at::Tensor& update) {
      const float* u = update.data_ptr<float>();
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t i = 0; i < B * D; ++i) hidden[i] += u[i];
    };
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      point_at_layer(s, l, row_start, keys, values);
      norm_rows(layer.norm1);
      at::Tensor qkv = layer.qkv.batch(x_t, layer.qkv_bias_t).contiguous();
      s.qkv = qkv.data_ptr<float>();
      layer.qkv.add_lora(s.slots, B, x, s.qkv, s.qkv_size);
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t item = 0; item < B * (H + s.KV); ++item) rope_and_store(s, item);
#pragma omp parallel num_threads(threads)
      {  // scratch per thread (per row and head, a long prompt chunk's scores would take rows x heads x length)
        std::vector<float> scores((H / s.KV) * s.max_length);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < B * s.KV; ++item)
          attend(s, item / s.KV, item % s.KV, 0, H / s.KV, scores.data());
      }
      add_rows(with_lora(layer.out, attended_t, layer.out.batch(attended_t, at::Tensor()).contiguous()));
      norm_rows(layer.norm2);
      at::Tensor gate_up = with_lora(layer.gate_up, x_t, layer.gate_up.batch(x_t, at::Tensor()).contiguous());
      s.gate_up = gate_up.data_ptr<float>();
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t b = 0; b < B; ++b) silu_gate(s, b);
      add_rows(with_lora(layer.down, act_t, layer.down.batch(act_t, at::Tensor()).contiguous()));
    }
    if (logits_rows.numel()) {  // prompt chunks: their last tokens' logits only
      const int64_t n = logits_rows.numel();
      const int64_t* picked = logits_rows.data_ptr<int64_t>();
      at::Tensor last = at::empty({n, D}, at::kFloat);
      for (int64_t i = 0; i < n; ++i)
        rms_norm(hidden + picked[i] * D, norm_.data_ptr<float>(), D, eps_, last.data_ptr<float>() + i * D);
      return head_.batch(last, at::Tensor()).contiguous();
    }
    norm_rows(norm_.data_ptr<float>());
    return with_lora(head_, x_t, head_.batch(x_t, at::Tensor()).contiguous());
  }

  at::Tensor embed_, embed_codes_, embed_scales_, norm_;  // embed, or its int8 rows and their scales
  Linear head_;
  int64_t embed_rows_ = 0;
  std::vector<Layer> layers_;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0, inter_ = 0, hidden_ = 0, vocab_ = 0;
  float scaling_ = 1.0f, eps_ = 1e-6f;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<Decoder>(m, "Decoder")
      .def(pybind11::init<std::vector<Named>, Named, std::map<std::string, int64_t>,
                          std::map<std::string, double>, const std::string&>(),
           pybind11::arg("layers"), pybind11::arg("model"), pybind11::arg("sizes"), pybind11::arg("scalars"),
           pybind11::arg("activations") = "float32")
      .def("step", &Decoder::step, pybind11::arg("tokens"), pybind11::arg("positions"), pybind11::arg("row_start"),
           pybind11::arg("keys"), pybind11::arg("values"), pybind11::arg("cos"), pybind11::arg("sin"),
           pybind11::arg("slots"), pybind11::arg("cache_rows") = pybind11::none(),
           pybind11::arg("logits_rows") = pybind11::none(),
           pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("set_lora", &Decoder::set_lora, pybind11::arg("layers"), pybind11::arg("head"))
      .def_property_readonly("packed_bytes", &Decoder::packed_bytes);
  m.def("qlinear", &qlinear, pybind11::arg("x"), pybind11::arg("codes"), pybind11::arg("scales"),
        pybind11::arg("mins") = pybind11::none(), pybind11::arg("bias") = pybind11::none(),
        pybind11::arg("activations") = "float32", pybind11::arg("pack") = false,
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("int8_paths", &int8_paths);
}
