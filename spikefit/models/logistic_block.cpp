#include <algorithm>
#include <vector>

// Runs `length` steps. future [L + T, K*N]: input of the coming steps (rows are zeroed as they
// are read); remaining [K*N]; targets, weights [N, D]: outgoing edges of one trial's neurons
// (weight 0: padding); coupling [S]; ref [T', N] or [T', 1]; theta [N]. Trial k takes its
// Exp(1) draws from pools[k] at positions[k], refilled from generators[k] when a step needs more
// than are left. Trials are independent, so whole trials are handed to threads for the whole
// block. Returns the spikes as sorted keys step*K*N + k*N + i.
at::Tensor logistic_block(
    const at::Tensor& targets, const at::Tensor& weights, const at::Tensor& coupling,
    const at::Tensor& ref, const at::Tensor& theta, double dt,
    std::vector<at::Generator> generators, at::Tensor pools, at::Tensor future,
    at::Tensor remaining, at::Tensor positions, int64_t length) {
  for (const at::Tensor& t : {targets, positions})
    TORCH_CHECK(t.scalar_type() == at::kLong && t.is_contiguous() && t.is_cpu());
  for (const at::Tensor& t : {weights, coupling, ref, theta, pools, future, remaining})
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.is_cpu(),
                "logistic_block: float32 contiguous CPU tensors expected");
  const int64_t n = targets.size(0), degree = targets.size(1);
  const int64_t width = remaining.size(0), trials = width / n;
  const int64_t support = coupling.size(0), window = ref.size(0);
  const int64_t ref_columns = ref.size(1), ref_stride = ref_columns == 1 ? 0 : 1;
  const int64_t pool_size = pools.size(1);
  TORCH_CHECK(trials * n == width && future.size(1) == width && theta.numel() == n &&
              future.size(0) >= length + std::max(support, window) && pool_size >= n &&
              pools.size(0) == trials && positions.numel() == trials &&
              static_cast<int64_t>(generators.size()) == trials);
  float* input = future.data_ptr<float>();
  float* left = remaining.data_ptr<float>();
  const int64_t* target = targets.data_ptr<int64_t>();
  const float* weight = weights.data_ptr<float>();
  const float* c = coupling.data_ptr<float>();
  const float* own = ref.data_ptr<float>();
  const float* th = theta.data_ptr<float>();
  float* pool = pools.data_ptr<float>();
  int64_t* position = positions.data_ptr<int64_t>();
  at::Tensor shifted = at::empty({width}, future.options());
  at::Tensor hazard = at::empty({width}, future.options());
  float* x = shifted.data_ptr<float>();
  const float* h = hazard.data_ptr<float>();
  // for trial k, in [k*N, (k+1)*N): synaptic drive, the neurons it reaches, those that fired
  std::vector<float> drive(width, 0.f);
  std::vector<int64_t> hit(width), fired(width);

  // Step s of trial k after its hazards h: threshold crossings, new thresholds, delivery of
  // the spikes to the input of steps s+1, s+2, ...
  auto step = [&](int64_t s, int64_t k, std::vector<int64_t>& events) {
    const int64_t offset = k * n;
    int64_t* spiked = fired.data() + offset;
    int64_t count = 0;
    for (int64_t i = offset; i < offset + n; ++i) {
      left[i] -= h[i];
      spiked[count] = i;
      count += left[i] <= 0;
    }
    if (count == 0) return;
    if (position[k] + count > pool_size) {
      pools.select(0, k).exponential_(1.0, generators[k]);
      position[k] = 0;
    }
    const float* draw = pool + k * pool_size + position[k];
    position[k] += count;
    for (int64_t f = 0; f < count; ++f) {
      left[spiked[f]] = draw[f];
      events.push_back(s * width + spiked[f]);
    }
    float* sum = drive.data() + offset;
    int64_t* reached = hit.data() + offset;
    int64_t hits = 0;  // (a neuron may be listed twice if its sum returned to 0: harmless)
    for (int64_t f = 0; f < count; ++f) {
      const int64_t row = (spiked[f] - offset) * degree;
      for (int64_t d = row; d < row + degree; ++d) {
        if (weight[d] == 0) continue;
        const int64_t j = target[d];
        if (hits < n) {
          reached[hits] = j;
          hits += sum[j] == 0;
        }
        sum[j] += weight[d];
      }
    }
    float* next = input + (s + 1) * width + offset;
    if (4 * hits < n) {  // few neurons reached: one at a time
      for (int64_t m = 0; m < hits; ++m) {
        const int64_t j = reached[m];
        for (int64_t l = 0; l < support; ++l) next[l * width + j] += c[l] * sum[j];
        sum[j] = 0;
      }
    } else {  // many: whole rows
      for (int64_t l = 0; l < support; ++l) {
        float* row = next + l * width;
        for (int64_t j = 0; j < n; ++j) row[j] += c[l] * sum[j];
      }
      std::fill(sum, sum + n, 0.f);
    }
    for (int64_t f = 0; f < count; ++f) {
      const int64_t i = spiked[f] - offset;
      for (int64_t l = 0; l < window; ++l)
        next[l * width + i] += own[l * ref_columns + i * ref_stride];
    }
  };
  // All steps of trials [begin, end).
  auto run = [&](int64_t begin, int64_t end, std::vector<int64_t>& events) {
    at::Tensor g = shifted.slice(0, begin * n, end * n), out = hazard.slice(0, begin * n, end * n);
    for (int64_t s = 0; s < length; ++s) {
      float* now = input + s * width;
      for (int64_t k = begin; k < end; ++k) {
        for (int64_t i = k * n; i < (k + 1) * n; ++i) {
          x[i] = now[i] - th[i - k * n];
          now[i] = 0;
        }
      }
      if (dt == 1.0) {
        at::softplus_out(out, g, 1, 20);
      } else {
        at::sigmoid_out(out, g);
        out.mul_(-dt);
        at::log1p_out(out, out);
        out.neg_();
      }
      for (int64_t k = begin; k < end; ++k) step(s, k, events);
    }
  };

  // whole trials per thread of ATen's intra-op pool: a trial's block of steps is long work
  // (milliseconds), so even two trials are worth splitting
  std::vector<std::vector<int64_t>> events(at::get_num_threads());
  at::parallel_for(0, trials, 1, [&](int64_t begin, int64_t end) {
    run(begin, end, events[at::get_thread_num()]);
  });
  std::vector<int64_t> keys;
  for (const auto& part : events) {
    keys.insert(keys.end(), part.begin(), part.end());
    std::inplace_merge(keys.begin(), keys.end() - part.size(), keys.end());
  }
  return at::tensor(keys, at::kLong);
}
