// The block loops of the fast engine: spike-history models (history_block) and
// synaptic-activation models (activation_block), for every declared emission (loop_emission).
// The row of K*N neuron-trials is cut into `parts` ranges, one per thread of the Team
// (loop_team); every thread evaluates, draws and delivers for its own range, and the threads
// meet once per step (twice more for draws on the whole row, which take the model's generator
// in the row's order). Trials take their rescaled Bernoulli draws from their own pools in the
// order of their neurons, whichever thread draws them, so the spikes do not depend on `parts`.
namespace spikefit {

at::Tensor checked(const at::Tensor& t, at::ScalarType type, const char* name) {
  TORCH_CHECK(t.scalar_type() == type && t.is_contiguous() && t.is_cpu(), name,
              ": a contiguous CPU tensor of ", type, " expected");
  return t;
}

// Most draws of a neuron-trial in one step of counts by time rescaling (one more than the
// engine's largest credible count, so that a runaway is seen).
constexpr int64_t kMaxRounds = 256;

// A step reaches many of a part's neuron-trials when it visits more than 1 in kDenseReach.
constexpr int64_t kDenseReach = 4;

// term·sum + value rounded once where `fused` (as torch's addcmul on CPUs with fused
// multiply-adds), else twice.
inline float multiply_add(float term, float sum, float value, bool fused) {
  return fused ? std::fma(term, sum, value) : value + term * sum;
}

// row[i] = multiply_add(term, sum[i], row[i]) for i < length.
void add_scaled(float* row, float term, const float* sum, int64_t length, bool fused) {
  if (fused)
    for (int64_t i = 0; i < length; ++i) row[i] = std::fma(term, sum[i], row[i]);
  else
    for (int64_t i = 0; i < length; ++i) row[i] = row[i] + term * sum[i];
}

// What every neuron-trial i in [lo, hi) has left before it fires, after a step: the odds
// left[i] = (left[i] - step[i]) / (1 + step[i]) of the step's odds (rescaled Bernoulli draws),
// else the hazard left[i] - step[i] (counts); every i whose left is then not above 0 appended
// to `fired`, in order: a vector at a time, its fired lanes read from its mask.
void spend(float* left, const float* step, bool odds, int64_t lo, int64_t hi,
           std::vector<int64_t>& fired) {
  using Vec = at::vec::Vectorized<float>;
  const Vec zero(0.f), one(1.f);
  for (int64_t i = lo; i < hi; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), hi - i);
    const Vec spent = Vec::loadu(step + i, count), rest = Vec::loadu(left + i, count) - spent;
    const Vec after = odds ? rest / (spent + one) : rest;
    after.store(left + i, count);
    const int kept = (after <= zero).zero_mask();  // lanes that did not fire
    if ((kept | ~((1 << count) - 1)) != -1)
      for (int lane = 0; lane < count; ++lane)
        if (!(kept >> lane & 1)) fired.push_back(i + lane);
  }
}

// Asks the cache for values[0, count) (the edges of a neuron that fired, read soon after).
template <class T>
void prefetch(const T* values, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(values);
#if defined(__GNUC__) || defined(__clang__)
  for (int64_t at = 0; at < count * static_cast<int64_t>(sizeof(T)); at += 64)
    __builtin_prefetch(bytes + at);
#endif
}

// Spikes of the parts gathered: (keys step*width + i, sorted; counts).
std::tuple<at::Tensor, at::Tensor> gather(const std::vector<std::vector<int64_t>>& keys,
                                          const std::vector<std::vector<float>>& counts) {
  std::vector<std::pair<int64_t, float>> all;
  for (size_t p = 0; p < keys.size(); ++p) {
    const size_t start = all.size();
    for (size_t m = 0; m < keys[p].size(); ++m) all.emplace_back(keys[p][m], counts[p][m]);
    std::inplace_merge(all.begin(), all.begin() + start, all.end());
  }
  at::Tensor key = at::empty({static_cast<int64_t>(all.size())}, at::kLong);
  at::Tensor count = at::empty({static_cast<int64_t>(all.size())}, at::kFloat);
  for (size_t m = 0; m < all.size(); ++m) {
    key.data_ptr<int64_t>()[m] = all[m].first;
    count.data_ptr<float>()[m] = all[m].second;
  }
  return {key, count};
}

// What one part holds: its range [lo, hi) of the row, the neuron-trials of its range that
// fired in the current and the previous step (the others read them), its spikes.
struct Part {
  int64_t lo = 0, hi = 0;
  std::vector<int64_t> fired[2];
  std::vector<int64_t> pending[2];  // of the rounds of counts by time rescaling
  std::vector<int64_t> keys;
  std::vector<float> counts;
};

// ------------------------------------------------------------------ spike-history models

// Runs `length` steps of a spike-history model. future [L + T, K*N]: the input of the coming
// steps (background and stimulus included; rows are zeroed as they are read); targets [N, D],
// degrees [N], weights [N, D, B]: the outgoing edges of one trial's neurons, targets sorted;
// coupling [S, B], added with one rounding where `fused` (as torch's addcmul does on CPUs with
// fused multiply-adds); ref [T', N] or [T', 1] (T' = 0: none). Rescaled draws: trial k's
// thresholds come from pools[k] at positions[k], refilled from generators[k] (Exp(1) draws E;
// Bernoulli: e^E - 1); `remaining` [K*N] is what each has left before it fires (Bernoulli: odds,
// counts: hazard). Other draws: generators[0] is the model's. latest [K*N] gets the input of
// the last step.
std::tuple<at::Tensor, at::Tensor> history_block(
    const at::Tensor& targets, const at::Tensor& degrees, const at::Tensor& weights,
    const at::Tensor& coupling, bool fused, const at::Tensor& ref, int64_t link, int64_t draw,
    bool unit_dt,
    const std::vector<at::Tensor>& parameters, std::vector<at::Generator> generators,
    at::Tensor pools, at::Tensor future, at::Tensor remaining, at::Tensor latest,
    at::Tensor positions, int64_t length, int64_t parts, int64_t aten_threads) {
  checked(targets, at::kLong, "targets");
  checked(degrees, at::kLong, "degrees");
  checked(positions, at::kLong, "positions");
  for (const at::Tensor& t : {weights, coupling, ref, pools, future, remaining, latest})
    checked(t, at::kFloat, "history_block");
  const int64_t n = targets.size(0), degree = targets.size(1), n_basis = coupling.size(1);
  const int64_t width = future.size(1), trials = width / n, support = coupling.size(0);
  const int64_t window = ref.size(0), ref_columns = ref.size(1), ref_stride = ref_columns > 1;
  const bool counting = draw == kRescaledCounts, rescaled = draw == kRescaled || counting;
  TORCH_CHECK(trials * n == width && width <= std::numeric_limits<int>::max() &&
              weights.numel() == n * degree * n_basis &&
              future.size(0) >= length + std::max(support, window) && latest.numel() == width);
  TORCH_CHECK(!rescaled || (remaining.numel() == width && pools.size(0) == trials &&
                            pools.size(1) >= n && positions.numel() == trials &&
                            static_cast<int64_t>(generators.size()) == trials));
  const Row row(width, aten_threads);
  const Emission emission(link, draw, unit_dt, parameters, n, row);
  float* input = future.data_ptr<float>();
  float* left = rescaled ? remaining.data_ptr<float>() : nullptr;
  const int64_t* target = targets.data_ptr<int64_t>();
  const int64_t* out_degree = degrees.data_ptr<int64_t>();
  const float* weight = weights.data_ptr<float>();
  const float* c = coupling.data_ptr<float>();
  const float* own = ref.data_ptr<float>();
  const int64_t pool_size = rescaled ? pools.size(1) : 0;
  at::Tensor rates_row = at::empty({width}, at::kFloat), work_row = at::empty({width}, at::kFloat);
  float* rates = rates_row.data_ptr<float>();
  at::Tensor counted_row = at::empty({counting ? width : 0}, at::kFloat);
  float* counted = counted_row.data_ptr<float>();  // counts of the step (time-rescaled)
  float* work = work_row.data_ptr<float>();
  std::unique_ptr<std::atomic<int64_t>[]> refilled(new std::atomic<int64_t>[trials]);
  for (int64_t k = 0; k < trials; ++k) refilled[k].store(-1);
  at::Tensor drawn;           // counts of a step drawn on the whole row
  const float* drawn_counts;  // (nullptr: one spike each)
  parts = std::max<int64_t>(1, std::min(parts, width));
  std::vector<Part> part(parts);
  for (int64_t p = 0; p < parts; ++p) part[p].lo = row.cut(p, parts), part[p].hi = row.cut(p + 1, parts);
  // the parts whose ranges meet trial k: [first_part[k], last_part[k]]
  std::vector<int64_t> first_part(trials), last_part(trials);
  for (int64_t k = 0; k < trials; ++k) {
    first_part[k] = last_part[k] = -1;
    for (int64_t p = 0; p < parts; ++p)
      if (part[p].lo < (k + 1) * n && part[p].hi > k * n) {
        if (first_part[k] < 0) first_part[k] = p;
        last_part[k] = p;
      }
  }
  // every part's own copy of the pool positions of the trials, moved on alike
  const std::vector<int64_t> initial(positions.data_ptr<int64_t>(),
                                     positions.data_ptr<int64_t>() + positions.numel());
  std::vector<std::vector<int64_t>> positions_of(parts, initial);
  Team& team = Team::instance();

  // The entries of a sorted list of neuron-trials that lie in trial k.
  auto in_trial = [&](const std::vector<int64_t>& list, int64_t k) {
    return std::make_pair(std::lower_bound(list.begin(), list.end(), k * n),
                          std::lower_bound(list.begin(), list.end(), (k + 1) * n));
  };
  // The fired neuron-trials of part q in trial k, from the list of step parity `side`.
  auto fired_in = [&](int64_t q, int side, int64_t k) { return in_trial(part[q].fired[side], k); };

  // Rescaled draws for the neuron-trials of part p in trial k listed by list_of(q) for every
  // part q: the pool's next ones, after those of the lower parts, replacing the odds left
  // (Bernoulli: one spike at most) or added to the hazard left (counts); the trial's first part
  // refills an exhausted pool and marks it with `key`, its other parts wait for the mark.
  auto redraw_trial = [&](int64_t p, const auto& list_of, int64_t k, int64_t key) {
    std::vector<int64_t>& position = positions_of[p];
    int64_t before = 0, total = 0;
    for (int64_t q = first_part[k]; q <= last_part[k]; ++q) {
      const auto range = in_trial(list_of(q), k);
      const int64_t count = range.second - range.first;
      before += q < p ? count : 0;
      total += count;
    }
    if (total == 0) return;
    if (position[k] + total > pool_size) {
      if (p == first_part[k]) {
        at::Tensor pool = pools.select(0, k);
        pool.exponential_(1.0, generators[k]);
        if (!counting) pool.expm1_();
        refilled[k].store(key);
        team.wake();
      } else {
        team.await([&] { return refilled[k].load() == key; });
      }
      position[k] = 0;
    }
    const float* draw_k = pools.data_ptr<float>() + k * pool_size + position[k] + before;
    const auto range = in_trial(list_of(p), k);
    for (auto f = range.first; f != range.second; ++f)
      left[*f] = counting ? left[*f] + draw_k[f - range.first] : draw_k[f - range.first];
    position[k] += total;
  };
  // The same for every trial part p's range meets.
  auto redraw = [&](int64_t p, const auto& list_of, int64_t key) {
    for (int64_t k = part[p].lo / n; k * n < part[p].hi; ++k) redraw_trial(p, list_of, k, key);
  };

  // Counts by time rescaling, after the first round of draws (every spike of the step): a
  // neuron-trial whose hazard left is still not above 0 fires once more and draws again,
  // round after round (all parts meet between rounds), at most kMaxRounds times in a step.
  auto further_rounds = [&](int64_t p, int side, int64_t s) {
    Part& me = part[p];
    for (int64_t round = 1;; ++round) {
      const std::vector<int64_t>& last = round == 1 ? me.fired[side] : me.pending[(round - 1) & 1];
      std::vector<int64_t>& next = me.pending[round & 1];
      next.clear();
      for (int64_t i : last)
        if (left[i] <= 0) next.push_back(i);
      team.sync();
      bool any = false;
      for (const Part& other : part) any = any || !other.pending[round & 1].empty();
      if (!any || round >= kMaxRounds) return;
      for (int64_t i : next) counted[i] += 1.f;
      const auto pending_of = [&](int64_t q) -> const std::vector<int64_t>& {
        return part[q].pending[round & 1];
      };
      redraw(p, pending_of, s * kMaxRounds + round);
    }
  };

  // Delivery into part p's range of the spikes of step s: sums over the fired presynaptic
  // neurons in their order, then the coupling kernel, then the self kernel of p's own.
  struct Sums {
    std::vector<float> sum;
    std::vector<int64_t> reached;
    std::vector<char> touched;
    // where every neuron's sorted targets reach the part's range in the first trial it meets
    // and leave it in the last (where the range starts or ends inside a trial)
    std::vector<int64_t> enter, leave;
  };
  std::vector<Sums> sums(parts);
  auto deliver = [&](int64_t p, int side, int64_t s) {
    Part& me = part[p];
    const int64_t lo = me.lo, span = me.hi - me.lo;
    Sums& acc = sums[p];
    float* next = input + (s + 1) * width;
    if (support > 0) {
      // dense: the step reaches many of the part's values, whose lag rows are then updated
      // whole (adding c·0 leaves a value as it is); sparse: only the reached ones, listed
      int64_t visits = 0;  // (and the edges of the fired neurons prefetched meanwhile)
      for (int64_t k = lo / n; k * n < me.hi; ++k)
        for (int64_t q = first_part[k]; q <= last_part[k]; ++q) {
          const auto range = fired_in(q, side, k);
          for (auto f = range.first; f != range.second; ++f) {
            const int64_t j = *f - k * n;
            visits += out_degree[j];
            prefetch(target + j * degree, out_degree[j]);
            prefetch(weight + j * degree * n_basis, out_degree[j] * n_basis);
          }
        }
      const bool dense = visits * kDenseReach > span;
      for (int64_t k = lo / n; k * n < me.hi; ++k) {
        const int64_t a = std::max(lo, k * n) - k * n, b = std::min(me.hi, (k + 1) * n) - k * n;
        for (int64_t q = first_part[k]; q <= last_part[k]; ++q) {
          const auto range = fired_in(q, side, k);
          for (auto f = range.first; f != range.second; ++f) {
            const float count = drawn_counts ? drawn_counts[*f] : 1.f;
            const int64_t j = *f - k * n;
            const int64_t* row_targets = target + j * degree;
            const int64_t* from = row_targets + (a == 0 ? 0 : acc.enter[j]);
            const int64_t* to = row_targets + (b == n ? out_degree[j] : acc.leave[j]);
            const float* w = weight + (from - target) * n_basis;
            float* sum = acc.sum.data() + k * n - lo;
            if (n_basis == 1) {
              if (dense)
                for (const int64_t* t = from; t != to; ++t, ++w) sum[*t] += *w * count;
              else
                for (const int64_t* t = from; t != to; ++t, ++w) {
                  const int64_t idx = k * n + *t - lo;
                  if (!acc.touched[idx]) acc.touched[idx] = 1, acc.reached.push_back(idx);
                  sum[*t] += *w * count;
                }
            } else {
              for (const int64_t* t = from; t != to; ++t, w += n_basis) {
                const int64_t idx = k * n + *t - lo;
                if (!dense && !acc.touched[idx]) acc.touched[idx] = 1, acc.reached.push_back(idx);
                for (int64_t basis = 0; basis < n_basis; ++basis)
                  acc.sum[basis * span + idx] += w[basis] * count;
              }
            }
          }
        }
      }
      for (int64_t l = 0; l < support; ++l) {
        float* row_l = next + l * width + lo;
        for (int64_t basis = 0; basis < n_basis; ++basis) {  // one multiply-add per function, in order
          const float term = c[l * n_basis + basis];
          const float* sum = acc.sum.data() + basis * span;
          if (dense)
            add_scaled(row_l, term, sum, span, fused);
          else
            for (int64_t idx : acc.reached) row_l[idx] = multiply_add(term, sum[idx], row_l[idx], fused);
        }
      }
      if (dense) {
        std::fill(acc.sum.begin(), acc.sum.end(), 0.f);
      } else {
        for (int64_t idx : acc.reached) {
          for (int64_t basis = 0; basis < n_basis; ++basis) acc.sum[basis * span + idx] = 0;
          acc.touched[idx] = 0;
        }
        acc.reached.clear();
      }
    }
    for (int64_t i : me.fired[side]) {
      const float count = drawn_counts ? drawn_counts[i] : 1.f;
      const int64_t j = i % n;
      for (int64_t l = 0; l < window; ++l)
        next[l * width + i] += own[l * ref_columns + j * ref_stride] * count;
    }
  };

  auto job = [&](int p) {
    Part& me = part[p];
    sums[p].sum.assign(n_basis * (me.hi - me.lo), 0.f);
    sums[p].touched.assign(me.hi - me.lo, 0);
    // the first target of every neuron at or past `bound` (none needed at a trial's bounds)
    auto passing = [&](int64_t bound) {
      std::vector<int64_t> first(bound % n == 0 ? 0 : n);
      for (size_t j = 0; j < first.size(); ++j) {
        const int64_t* row_targets = target + j * degree;
        first[j] = std::lower_bound(row_targets, row_targets + out_degree[j], bound) - row_targets;
      }
      return first;
    };
    sums[p].enter = passing(me.lo % n);
    sums[p].leave = passing(me.hi - (me.hi - 1) / n * n);
    for (std::vector<int64_t>& list : me.fired) list.reserve(me.hi - me.lo);
    for (int64_t s = 0; s < length; ++s) {
      const int side = s & 1;
      float* now = input + s * width;
      std::vector<int64_t>& fired = me.fired[side];
      fired.clear();
      emission.evaluate(now, rates, work, me.lo, me.hi);
      if (s == length - 1) std::copy(now + me.lo, now + me.hi, latest.data_ptr<float>() + me.lo);
      std::fill(now + me.lo, now + me.hi, 0.f);
      if (rescaled) {
        spend(left, rates, !counting, me.lo, me.hi, fired);
      } else if (draw == kThreshold) {
        emission.each(me.lo, me.hi, [&](int64_t i, int64_t j) {
          if (emission.crosses(rates, i, j)) fired.push_back(i);
        });
      }
      team.sync();
      if (draw == kPoisson || draw == kBernoulli) {
        if (p == 0) {
          drawn = emission.sample(rates_row, generators[0]);
          drawn_counts = drawn.data_ptr<float>();
          for (Part& other : part) {
            other.fired[side].clear();
            for (int64_t i = other.lo; i < other.hi; ++i)
              if (drawn_counts[i] != 0) other.fired[side].push_back(i);
          }
        }
        team.sync();
      }
      if (rescaled) {
        const auto fired_of = [&](int64_t q) -> const std::vector<int64_t>& { return part[q].fired[side]; };
        if (counting)
          for (int64_t i : fired) counted[i] = 1.f;
        redraw(p, fired_of, s * kMaxRounds);
        if (counting) further_rounds(p, side, s);
      }
      deliver(p, side, s);
      for (int64_t i : fired) {
        me.keys.push_back(s * width + i);
        me.counts.push_back(drawn_counts ? drawn_counts[i] : 1.f);
      }
    }
  };
  drawn_counts = counting ? counted : nullptr;
  {
    pybind11::gil_scoped_release release;
    team.run(static_cast<int>(parts), job);
  }
  if (rescaled)
    for (int64_t k = 0; k < trials; ++k)
      positions.data_ptr<int64_t>()[k] = positions_of[first_part[k]][k];
  std::vector<std::vector<int64_t>> keys;
  std::vector<std::vector<float>> counts;
  for (Part& me : part) keys.push_back(std::move(me.keys)), counts.push_back(std::move(me.counts));
  return gather(keys, counts);
}

// ------------------------------------------------------------------ synaptic-activation models

// Runs `length` steps of a synaptic-activation model: g = r * sum_e s[pre(e)] w_e + input,
// spikes X from the emission, s <- s * decay + X * dt. rowptr [N + 1], sources, weights [E]:
// the incoming edges of every neuron in the order of the network's edges; r, decay, dt [N];
// activation [K*N], updated; inputs [L, K*N] (background, noise and stimulus).
std::tuple<at::Tensor, at::Tensor> activation_block(
    const at::Tensor& rowptr, const at::Tensor& sources, const at::Tensor& weights,
    const at::Tensor& r, const at::Tensor& decay, const at::Tensor& dt, int64_t link,
    int64_t draw, bool unit_dt, const std::vector<at::Tensor>& parameters,
    std::vector<at::Generator> generators, at::Tensor activation, const at::Tensor& inputs,
    int64_t length, int64_t parts, int64_t aten_threads) {
  checked(rowptr, at::kLong, "rowptr");
  checked(sources, at::kLong, "sources");
  for (const at::Tensor& t : {weights, r, decay, dt, inputs, activation})
    checked(t, at::kFloat, "activation_block");
  const int64_t n = rowptr.numel() - 1, width = activation.numel(), trials = width / n;
  TORCH_CHECK(trials * n == width && inputs.numel() >= length * width && r.numel() == n &&
              decay.numel() == n && dt.numel() == n && draw != kRescaled && draw != kRescaledCounts &&
              (draw == kThreshold || generators.size() == 1));
  const Row row(width, aten_threads);
  const Emission emission(link, draw, unit_dt, parameters, n, row);
  const int64_t* start = rowptr.data_ptr<int64_t>();
  const int64_t* source = sources.data_ptr<int64_t>();
  const float *weight = weights.data_ptr<float>(), *scale = r.data_ptr<float>();
  const float *keep = decay.data_ptr<float>(), *step_ms = dt.data_ptr<float>();
  at::Tensor other = at::empty({width}, at::kFloat), g_row = at::empty({width}, at::kFloat);
  at::Tensor rates_row = at::empty({width}, at::kFloat), work_row = at::empty({width}, at::kFloat);
  float* state[2] = {activation.data_ptr<float>(), other.data_ptr<float>()};
  float *g = g_row.data_ptr<float>(), *rates = rates_row.data_ptr<float>();
  float* work = work_row.data_ptr<float>();
  at::Tensor drawn;
  const float* drawn_counts = nullptr;
  parts = std::max<int64_t>(1, std::min(parts, width));
  std::vector<Part> part(parts);
  for (int64_t p = 0; p < parts; ++p) part[p].lo = row.cut(p, parts), part[p].hi = row.cut(p + 1, parts);
  Team& team = Team::instance();

  auto job = [&](int p) {
    Part& me = part[p];
    for (int64_t s = 0; s < length; ++s) {
      const float* now = state[s & 1];
      float* after = state[(s + 1) & 1];
      const float* drive = inputs.data_ptr<float>() + s * width;
      emission.each(me.lo, me.hi, [&](int64_t i, int64_t j) {
        const float* trial = now + (i - j);
        float sum = 0.f;
        for (int64_t e = start[j]; e < start[j + 1]; ++e) sum += trial[source[e]] * weight[e];
        g[i] = scale[j] * sum + drive[i];
      });
      emission.evaluate(g, rates, work, me.lo, me.hi);
      if (draw != kThreshold) {
        team.sync();
        if (p == 0) {
          drawn = emission.sample(rates_row, generators[0]);
          drawn_counts = drawn.data_ptr<float>();
        }
        team.sync();
      }
      emission.each(me.lo, me.hi, [&](int64_t i, int64_t j) {
        const float x = drawn_counts ? drawn_counts[i] : emission.crosses(rates, i, j) ? 1.f : 0.f;
        after[i] = now[i] * keep[j] + x * step_ms[j];
        if (x != 0) me.keys.push_back(s * width + i), me.counts.push_back(x);
      });
      team.sync();
    }
  };
  {
    pybind11::gil_scoped_release release;
    team.run(static_cast<int>(parts), job);
  }
  if (length % 2) activation.copy_(other);
  std::vector<std::vector<int64_t>> keys;
  std::vector<std::vector<float>> counts;
  for (Part& me : part) keys.push_back(std::move(me.keys)), counts.push_back(std::move(me.counts));
  return gather(keys, counts);
}

}  // namespace spikefit

using spikefit::activation_block;
using spikefit::history_block;
