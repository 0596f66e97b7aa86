// Links and emissions of the compiled loops: the operations of spikefit.models.links and
// spikefit.models.emissions, in the same order and in float32, so that every rate, odds and
// spike is the one the Python path computes. Exact operations (+, -, *, /, max) are written out;
// sigmoid and exp are ATen's, called on pieces of the row of every neuron-trial on which they
// give what they give on the whole row.
#include <ATen/Config.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

namespace spikefit {

enum Link : int64_t { kLogistic = 0, kExponential = 1, kRectified = 2, kIdentity = 3 };
enum Draw : int64_t {
  kRescaled = 0,  // Bernoulli by time rescaling
  kBernoulli = 1,
  kPoisson = 2,
  kThreshold = 3,
  kRescaledCounts = 4  // Poisson counts by time rescaling
};

// The exponent of the odds e^(g - θ) of a logistic link at Δt = 1 ms is kept within
// ±kOddsExponent, where the odds stay normal floats (as Logistic.odds in Python).
constexpr float kOddsExponent = 87.f;

#if AT_MKL_ENABLED() && !defined(__APPLE__)
#define SPIKEFIT_MKL_EXP 1
// MKL's vector exponential (LP64 MKL, as ATen/cpu/vml.h assumes); the loops' threads keep
// their MKL calls serial (SerialOps).
extern "C" void vmsExp(int n, const float* a, float* r, long long mode);
constexpr long long kVmlMode = 0x2 | 0x140000 | 0x100;  // VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE
#endif

// out[0, n) = exp(x[0, n)) as torch.exp computes it on the CPU (ATen/cpu/vml.h): MKL's vector
// exponential in ATen's mode where ATen is built with MKL, else the vml map of Vectorized::exp.
// Neither depends on where a piece of a row starts or ends.
void exp_as_torch(const float* x, float* out, int64_t n) {
#ifdef SPIKEFIT_MKL_EXP
  vmsExp(static_cast<int>(n), x, out, kVmlMode);
#else
  at::vec::map([](at::vec::Vectorized<float> v) { return v.exp(); }, out, x, n);
#endif
}

// out[a, b) = exp(x) of x = g - θ clamped to ±kOddsExponent (NaN kept), with work[a, b) = x.
void odds_of_difference(const float* g, const float* theta, float* out, float* work, int64_t a,
                        int64_t b) {
  using Vec = at::vec::Vectorized<float>;
  const Vec lowest(-kOddsExponent), highest(kOddsExponent);
  for (int64_t i = a; i < b; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), b - i);
    const Vec x = Vec::loadu(g + i, count) - Vec::loadu(theta + i, count);
    Vec::blendv(Vec::blendv(x, lowest, x < lowest), highest, x > highest).store(work + i, count);
  }
  exp_as_torch(work + a, out + a, b - a);
}

// Pieces of a row of `width` values. ATen evaluates sigmoid over the row in
// at::parallel_for chunks, each with vector instructions from its start and scalar ones for its
// last (length mod 2 * vector width) values, which round differently: a piece that starts at a
// chunk's start plus a multiple of 64 and ends at a chunk's end or at such a point gets the same
// values. exp (vml: MKL's or Sleef's) gives the same values anywhere.
struct Row {
  static constexpr int64_t kAlign = 64;
  int64_t width = 0, chunk = 0;

  Row(int64_t width, int64_t aten_threads) : width(width) {
    const int64_t grain = at::internal::GRAIN_SIZE;
    const int64_t chunks = width > grain && aten_threads > 1
                               ? std::min(aten_threads, (width + grain - 1) / grain)
                               : 1;
    chunk = std::max<int64_t>((width + chunks - 1) / chunks, 1);
  }

  // The first value of part p of `parts`: a point where a piece may start.
  int64_t cut(int64_t p, int64_t parts) const {
    const int64_t x = width * p / parts, start = x / chunk * chunk;
    return p == parts ? width : start + (x - start) / kAlign * kAlign;
  }

  // Calls f(a, b) for the pieces [a, b) of [lo, hi) (lo a cut).
  template <class F>
  void pieces(int64_t lo, int64_t hi, F f) const {
    for (int64_t a = lo; a < hi;) {
      const int64_t b = std::min(hi, (a / chunk + 1) * chunk);
      f(a, b);
      a = b;
    }
  }
};

// The declared emission of a model: its link with the link's parameters (one value per neuron)
// and how spikes are drawn.
struct Emission {
  int64_t link, draw, n;
  bool unit_dt;                       // Δt = 1 ms: the logistic odds are e^(g - θ)
  std::vector<const float*> params;   // the link's parameters, then the threshold's θ
  const Row& row;
  std::vector<float> row_theta;       // θ of every value of the row, for e^(g - θ)

  Emission(int64_t link, int64_t draw, bool unit_dt, const std::vector<at::Tensor>& parameters,
           int64_t n, const Row& row)
      : link(link), draw(draw), n(n), unit_dt(unit_dt), row(row) {
    for (const at::Tensor& p : parameters) {
      TORCH_CHECK(p.scalar_type() == at::kFloat && p.is_contiguous() && p.numel() == n,
                  "emission parameters: float32 contiguous [N] tensors expected");
      params.push_back(p.data_ptr<float>());
    }
    if (odds_are_exponential()) {
      row_theta.resize(row.width);
      each(0, row.width, [&](int64_t i, int64_t j) { row_theta[i] = params[0][j]; });
    }
  }

  // Rescaled draws of a logistic link at Δt = 1 ms: the odds p / (1 - p) are e^(g - θ).
  bool odds_are_exponential() const { return link == kLogistic && draw == kRescaled && unit_dt; }

  // Element-wise over [a, b) of a row, f(i, j) with the neuron j of value i.
  template <class F>
  void each(int64_t a, int64_t b, F f) const {
    for (int64_t start = a; start < b;) {
      const int64_t base = start / n * n, end = std::min(b, base + n);
      for (int64_t i = start; i < end; ++i) f(i, i - base);
      start = end;
    }
  }

  static at::Tensor view(const float* data, int64_t a, int64_t b) {
    return at::from_blob(const_cast<float*>(data) + a, {b - a}, at::kFloat);
  }

  // out[lo, hi) = the rate (expected count or probability) of the inputs g[lo, hi), or their
  // odds p / (1 - p) for rescaled Bernoulli draws; work: scratch of the row's size.
  void evaluate(const float* g, float* out, float* work, int64_t lo, int64_t hi) const {
    row.pieces(lo, hi, [&](int64_t a, int64_t b) { piece(g, out, work, a, b); });
  }

  void piece(const float* g, float* out, float* work, int64_t a, int64_t b) const {
    const float* const* p = params.data();
    if (odds_are_exponential()) {
      odds_of_difference(g, row_theta.data(), out, work, a, b);
      return;
    }
    at::Tensor result = view(out, a, b), operand = view(work, a, b);
    if (link == kLogistic) {  // Logistic: sigmoid(g - θ)·Δt
      each(a, b, [&](int64_t i, int64_t j) { work[i] = g[i] - p[0][j]; });
      at::sigmoid_out(result, operand);
      each(a, b, [&](int64_t i, int64_t j) { out[i] = out[i] * p[1][j]; });
    } else if (link == kExponential) {  // Exponential: Δt/α · exp(β g)
      each(a, b, [&](int64_t i, int64_t j) { work[i] = p[1][j] * g[i]; });
      at::exp_out(result, operand);
      each(a, b, [&](int64_t i, int64_t j) { out[i] = p[2][j] / p[0][j] * out[i]; });
    } else if (link == kRectified) {  // Rectified: λ0 [g - θ]+ Δt (NaN stays, as in relu)
      each(a, b, [&](int64_t i, int64_t j) {
        const float x = g[i] - p[1][j];
        out[i] = p[0][j] * (x < 0 ? 0.f : x) * p[2][j];
      });
    } else {  // Identity
      std::copy(g + a, g + b, out + a);
    }
    if (draw != kRescaled) return;
    // Bernoulli's odds p / (1 - p), p clamped below 1 first
    const float most = 1.f - std::numeric_limits<float>::epsilon();
    for (int64_t i = a; i < b; ++i) {
      const float p = out[i] > most ? most : out[i];
      out[i] = p / (1.f - p);
    }
  }

  // Threshold emission: a spike where the rate passes θ.
  bool crosses(const float* rate, int64_t i, int64_t j) const {
    return rate[i] > params.back()[j];
  }

  // Draws from the rates of the whole row with the model's generator (Poisson counts or
  // Bernoulli spikes), as the emission's sample does.
  at::Tensor sample(const at::Tensor& rates, const at::Generator& generator) const {
    return draw == kPoisson ? at::poisson(rates, generator) : at::bernoulli(rates, generator);
  }
};

}  // namespace spikefit
