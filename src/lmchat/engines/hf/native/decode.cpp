// The one-token decode step of a Llama-family model in float32 on the CPU, as one native call.
//
// Between its weight multiplies, a decode step runs ~25 small tensor ops per layer; each multiply has just
// streamed megabytes of weights through the CPU caches, so every framework op after it starts cold, and at small
// batches they cost a third of the step. Here the small work is a few tight loops per layer (RMSNorm, RoPE, keys
// and values into the slot cache, attention over each row's own positions, SiLU-gate, residuals):
//
// * one row: GEMVs split by output rows over the threads, all inside one OpenMP region (PyTorch's own libgomp
//   pool): each weight is read once, at the memory bandwidth;
// * two rows or more: oneDNN multiplies over the lean forward's packed weights (ATen's linear if unpacked).
//
// Built on first use by lmchat.engines.hf.native (torch.utils.cpp_extension); see docs/architecture-hf-engine.md.

#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t LANES = 16;  // one 512-bit (or two 256-bit) vector of floats per accumulator

struct Layer {
  const float *norm1, *qkv, *qkv_bias, *out, *norm2, *gate_up, *down;
  at::Tensor qkv_w, qkv_b, out_w, gate_up_w, down_w;  // for the batched path: oneDNN-packed when given, else plain
};

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

enum class Store { Set, Add };

inline void store(float* y, int64_t n, float value, const float* bias, Store mode) {
  value += bias ? bias[n] : 0.0f;
  y[n] = mode == Store::Add ? y[n] + value : value;
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
  float sum = 0.0f;
  for (int64_t i = 0; i < D; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(D) + eps);
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
  float scaling;
  const int64_t* pos;
  const float *cos, *sin;
  float *kcache, *vcache;  // this layer's cache, at the step's first row
  float *qkv, *query, *attended, *gate_up, *act, *scores;
};

// RoPE on one query or key head of one row; keys and values go to the row's own position in the cache
void rope_and_store(const Step& s, int64_t item) {
  const int64_t b = item / (s.H + s.KV), head = item % (s.H + s.KV);
  const float* src = s.qkv + b * s.qkv_size + head * s.hd;
  const float* c = s.cos + s.pos[b] * s.hd;
  const float* sn = s.sin + s.pos[b] * s.hd;
  if (head < s.H) {
    rope(src, c, sn, s.hd, s.query + (b * s.H + head) * s.hd);
  } else {
    const int64_t offset = b * s.row_stride + (head - s.H) * s.head_stride + s.pos[b] * s.hd;
    rope(src, c, sn, s.hd, s.kcache + offset);
    std::copy_n(src + s.KV * s.hd, s.hd, s.vcache + offset);
  }
}

// one query head of one row over that row's positions 0..pos
void attend(const Step& s, int64_t item) {
  const int64_t b = item / s.H, head = item % s.H, length = s.pos[b] + 1, hd = s.hd;
  const float* q = s.query + item * hd;
  const int64_t kv_offset = b * s.row_stride + (head / (s.H / s.KV)) * s.head_stride;
  const float* keys = s.kcache + kv_offset;
  const float* values = s.vcache + kv_offset;
  float* score = s.scores + item * s.max_length;
  float top = -INFINITY;
  for (int64_t j = 0; j < length; ++j) {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < hd; ++d) dot += q[d] * keys[j * hd + d];
    score[j] = dot * s.scaling;
    top = std::max(top, score[j]);
  }
  float total = 0.0f;
  for (int64_t j = 0; j < length; ++j) total += (score[j] = std::exp(score[j] - top));
  float* out = s.attended + item * hd;
  std::fill_n(out, hd, 0.0f);
  for (int64_t j = 0; j < length; ++j) {
    const float weight = score[j] / total;
#pragma omp simd
    for (int64_t d = 0; d < hd; ++d) out[d] += weight * values[j * hd + d];
  }
}

void silu_gate(const Step& s, int64_t item) {
  const int64_t b = item / s.I, i = item % s.I;
  const float g = s.gate_up[b * 2 * s.I + i];
  s.act[item] = g / (1.0f + std::exp(-g)) * s.gate_up[b * 2 * s.I + s.I + i];
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

class Decoder {
 public:
  // tensors: per layer norm1, qkv, qkv_bias (empty if none), out, norm2, gate_up, down (float32, contiguous);
  // packed: per layer qkv, out, gate_up, down, then the head: oneDNN-packed copies, or empty tensors
  Decoder(std::vector<at::Tensor> tensors, std::vector<at::Tensor> packed, at::Tensor embed, at::Tensor norm,
          at::Tensor head, std::vector<int64_t> sizes, std::vector<double> scalars)
      : tensors_(std::move(tensors)), embed_(std::move(embed)), norm_(std::move(norm)), head_(std::move(head)) {
    heads_ = sizes.at(0), kv_heads_ = sizes.at(1), head_dim_ = sizes.at(2), inter_ = sizes.at(3);
    scaling_ = static_cast<float>(scalars.at(0)), eps_ = static_cast<float>(scalars.at(1));
    hidden_ = embed_.size(1), vocab_ = head_.size(0);
    const size_t count = tensors_.size() / 7;
    TORCH_CHECK(tensors_.size() == count * 7 && packed.size() == count * 4 + 1,
                "7 tensors and 4 packed weights per layer, and the packed head");
    for (const auto& t : tensors_) TORCH_CHECK(t.numel() == 0 || (t.is_contiguous() &&
                                                t.scalar_type() == at::kFloat), "contiguous float32 weights");
    auto either = [](const at::Tensor& packed_weight, const at::Tensor& plain) {
      return packed_weight.defined() && packed_weight.numel() ? packed_weight : plain;
    };
    for (size_t i = 0; i < count; ++i) {
      const at::Tensor* t = &tensors_[i * 7];
      const at::Tensor* p = &packed[i * 4];
      auto ptr = [&](size_t j) { return t[j].numel() ? t[j].data_ptr<float>() : nullptr; };
      layers_.push_back({ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), ptr(5), ptr(6), either(p[0], t[1]), t[2],
                         either(p[1], t[3]), either(p[2], t[5]), either(p[3], t[6])});
    }
    head_batch_ = either(packed.back(), head_);
  }

  // tokens [B], positions [B]; batch row b is cache row row_start + b and attends to positions 0..positions[b]
  at::Tensor step(const at::Tensor& tokens_t, const at::Tensor& positions_t, int64_t row_start,
                  const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values, const at::Tensor& cos,
                  const at::Tensor& sin) {
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
      TORCH_CHECK(tok[b] >= 0 && tok[b] < embed_.size(0), "token id out of range");
      TORCH_CHECK(pos[b] >= 0 && pos[b] < cos.size(0), "position beyond the rotary table");
      max_length = std::max(max_length, pos[b] + 1);
    }
    TORCH_CHECK(keys.size() == layers_.size() && values.size() == layers_.size(), "one key/value tensor per layer");
    for (size_t l = 0; l < keys.size(); ++l) {
      for (const auto* cache : {&keys[l], &values[l]}) {
        TORCH_CHECK(cache->is_contiguous() && cache->scalar_type() == at::kFloat && cache->dim() == 4 &&
                    cache->size(0) >= row_start + rows && cache->size(1) == kv_heads_ &&
                    cache->size(2) >= max_length && cache->size(3) == head_dim_,
                    "slot cache layout [rows, kv_heads, capacity, head_dim] float32");
      }
    }
    const int64_t H = heads_, KV = kv_heads_, hd = head_dim_, I = inter_, capacity = keys[0].size(2);
    Step s{rows, hidden_, H, KV, hd, I, (H + 2 * KV) * hd, max_length, KV * capacity * hd, capacity * hd,
           scaling_, pos, cos.data_ptr<float>(), sin.data_ptr<float>()};
    at::Tensor hidden = at::empty({rows, hidden_}, at::kFloat);
    const float* embed = embed_.data_ptr<float>();
    for (int64_t b = 0; b < rows; ++b) std::copy_n(embed + tok[b] * hidden_, hidden_, hidden.data_ptr<float>() + b * hidden_);
    return rows == 1 ? single(s, hidden, row_start, keys, values) : batched(s, hidden, row_start, keys, values);
  }

 private:
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
        scores(H * s.max_length);
    s.qkv = qkv.data(), s.query = query.data(), s.attended = attended.data(), s.gate_up = gate_up.data();
    s.act = act.data(), s.scores = scores.data();
    float* hidden = hidden_t.data_ptr<float>();
    float* logits = logits_t.data_ptr<float>();
#pragma omp parallel num_threads(at::get_num_threads()) firstprivate(s)
    {
      for (size_t l = 0; l < layers_.size(); ++l) {
        const Layer& layer = layers_[l];
        point_at_layer(s, l, row_start, keys, values);
#pragma omp single
        rms_norm(hidden, layer.norm1, D, eps_, x.data());
        gemv(layer.qkv, layer.qkv_bias, s.qkv_size, D, x.data(), s.qkv, Store::Set);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < H + s.KV; ++item) rope_and_store(s, item);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < H; ++item) attend(s, item);
        gemv(layer.out, nullptr, D, H * hd, s.attended, hidden, Store::Add);
#pragma omp single
        rms_norm(hidden, layer.norm2, D, eps_, x.data());
        gemv(layer.gate_up, nullptr, 2 * I, D, x.data(), s.gate_up, Store::Set);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < I; ++item) silu_gate(s, item);
        gemv(layer.down, nullptr, D, I, s.act, hidden, Store::Add);
      }
#pragma omp single
      rms_norm(hidden, norm_.data_ptr<float>(), D, eps_, x.data());
      gemv(head_.data_ptr<float>(), nullptr, vocab_, D, x.data(), logits, Store::Set);
    }
    return logits_t;
  }

  // two rows or more: oneDNN multiplies over the packed weights (faster than GEMVs from 2 rows on, and a row's
  // result does not depend on the batch size), the work between them in parallel loops
  at::Tensor batched(Step s, at::Tensor& hidden_t, int64_t row_start, const std::vector<at::Tensor>& keys,
                     const std::vector<at::Tensor>& values) {
    const int64_t B = s.rows, D = s.D, H = s.H, hd = s.hd, I = s.I;
    const int threads = at::get_num_threads();
    at::Tensor x_t = at::empty({B, D}, at::kFloat), query_t = at::empty({B, H * hd}, at::kFloat);
    at::Tensor attended_t = at::empty({B, H * hd}, at::kFloat), act_t = at::empty({B, I}, at::kFloat);
    std::vector<float> scores(B * H * s.max_length);
    s.query = query_t.data_ptr<float>(), s.attended = attended_t.data_ptr<float>(), s.act = act_t.data_ptr<float>();
    s.scores = scores.data();
    float* hidden = hidden_t.data_ptr<float>();
    float* x = x_t.data_ptr<float>();
    auto norm_rows = [&](const float* weight) {
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t b = 0; b < B; ++b) rms_norm(hidden + b * D, weight, D, eps_, x + b * D);
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
      at::Tensor qkv = batch_linear(x_t, layer.qkv_w, layer.qkv_b).contiguous();
      s.qkv = qkv.data_ptr<float>();
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t item = 0; item < B * (H + s.KV); ++item) rope_and_store(s, item);
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t item = 0; item < B * H; ++item) attend(s, item);
      add_rows(batch_linear(attended_t, layer.out_w, at::Tensor()).contiguous());
      norm_rows(layer.norm2);
      at::Tensor gate_up = batch_linear(x_t, layer.gate_up_w, at::Tensor()).contiguous();
      s.gate_up = gate_up.data_ptr<float>();
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t item = 0; item < B * I; ++item) silu_gate(s, item);
      add_rows(batch_linear(act_t, layer.down_w, at::Tensor()).contiguous());
    }
    norm_rows(norm_.data_ptr<float>());
    return batch_linear(x_t, head_batch_, at::Tensor()).contiguous();
  }

  std::vector<at::Tensor> tensors_;
  at::Tensor embed_, norm_, head_, head_batch_;
  std::vector<Layer> layers_;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0, inter_ = 0, hidden_ = 0, vocab_ = 0;
  float scaling_ = 1.0f, eps_ = 1e-6f;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<Decoder>(m, "Decoder")
      .def(pybind11::init<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor,
                          std::vector<int64_t>, std::vector<double>>())
      .def("step", &Decoder::step, pybind11::call_guard<pybind11::gil_scoped_release>());
}
