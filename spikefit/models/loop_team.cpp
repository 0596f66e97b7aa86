// The threads of the compiled simulation loops (no OpenMP: its idle workers spin for a long
// time, which stalls every process of a busy machine).
#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#ifndef _WIN32
#include <unistd.h>
#endif

#if defined(__linux__)
extern "C" {  // torch's OpenMP and MKL, where they are there
void omp_set_num_threads(int) __attribute__((weak));
int omp_get_max_threads() __attribute__((weak));
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));  // mkl_set_num_threads_local in C
}
#endif

namespace spikefit {

// Keeps the ATen and MKL operations of this thread serial while it lives (thread-local
// settings, restored after): ATen starts an OpenMP team for operations on more than
// at::internal::GRAIN_SIZE values and MKL's exp for about a hundred, and a team whose threads
// wait for a busy core costs milliseconds per operation.
class SerialOps {
 public:
  SerialOps() {
    at::get_num_threads();  // torch sets a thread's counts on its first use: before, not after
#if defined(__linux__)
    if (omp_get_max_threads && omp_set_num_threads) {
      omp_ = omp_get_max_threads();
      omp_set_num_threads(1);
    }
    if (MKL_Set_Num_Threads_Local) mkl_ = MKL_Set_Num_Threads_Local(1);
#endif
  }
  ~SerialOps() {
#if defined(__linux__)
    if (omp_ > 0) omp_set_num_threads(omp_);
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(mkl_);
#endif
  }

 private:
  int omp_ = 0, mkl_ = 0;
};

// The parts of one block loop: part 0 is the calling thread, parts 1.. run on threads kept for
// the whole process (started on first use, started anew in a forked child). A wait spins for at
// most a few tens of microseconds, a budget halved whenever it had to sleep (so a busy machine
// soon stops paying for it) and doubled when spinning sufficed, then sleeps on a condition
// variable.
class Team {
 public:
  static Team& instance() {
    static Team team;
    return team;
  }

  // Runs job(p) for every part p < parts, part 0 on this thread (its ATen and MKL
  // operations serial meanwhile); rethrows the first exception.
  void run(int parts, const std::function<void(int)>& job) {
    std::lock_guard<std::mutex> one_run(run_mutex_);
    const SerialOps serial;
    parts = std::min(std::max(parts, 1), 255);
    start(parts - 1);
    job_ = &job;
    parts_.store(parts);
    arrived_.store(0);
    failed_.store(false);
    error_ = nullptr;
    running_.store(parts - 1);
    if (parts > 1) {  // the epoch carries the number of parts of its run
      epoch_.store(((epoch_.load() >> 8) + 1) << 8 | static_cast<uint64_t>(parts));
      wake();
    }
    execute(0);
    wait_until([&] { return running_.load() == 0; });
    if (error_) std::rethrow_exception(error_);
  }

  // Inside a job: returns once every part has called it as often (or a part failed).
  void sync() {
    const int parts = parts_.load();
    if (parts == 1) return;
    const uint64_t generation = generation_.load();
    if (arrived_.fetch_add(1) == parts - 1) {
      arrived_.store(0);
      generation_.fetch_add(1);
      wake();
    } else {
      wait_until([&] { return generation_.load() != generation || failed_.load(); });
    }
    if (failed_.load()) throw Abort{};
  }

  // Inside a job: returns once ready() holds; the part that makes it hold calls wake().
  template <class Ready>
  void await(Ready ready) {
    wait_until([&] { return ready() || failed_.load(); });
    if (failed_.load()) throw Abort{};
  }

  // Wakes the parts that sleep in a wait (after a change they wait for).
  void wake() {
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      changed_.notify_all();
    }
  }

  ~Team() {
    stop_.store(true);
    epoch_.fetch_add(1 << 8);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      changed_.notify_all();
    }
    for (std::thread& thread : threads_) thread.join();
  }

 private:
  struct Abort {};  // unwinds the other parts once one has failed
  using Clock = std::chrono::steady_clock;
  static constexpr int64_t kMinSpinNs = 1000, kMaxSpinNs = 50000;

  template <class Ready>
  void wait_until(Ready ready) {
    thread_local int64_t budget_ns = 20000;
    const auto begin = Clock::now();
    for (int64_t i = 0;; ++i) {
      if (ready()) {
        budget_ns = std::min(budget_ns * 2, kMaxSpinNs);
        return;
      }
      if ((i & 63) == 63 &&
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin).count() >
              budget_ns)
        break;
#if defined(__x86_64__) || defined(_M_X64)
      _mm_pause();
#endif
    }
    budget_ns = std::max(budget_ns / 2, kMinSpinNs);
    std::unique_lock<std::mutex> lock(mutex_);
    sleepers_.fetch_add(1);
    changed_.wait(lock, ready);
    sleepers_.fetch_sub(1);
  }

  void execute(int part) {
    try {
      (*job_)(part);
    } catch (const Abort&) {
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      failed_.store(true);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        changed_.notify_all();
      }
    }
  }

  // Threads for parts 1..workers; a forked child drops its parent's (they do not exist there).
  void start(int workers) {
#ifndef _WIN32
    if (pid_ != getpid()) {
      new std::vector<std::thread>(std::move(threads_));  // never joined nor destroyed
      threads_.clear();
      pid_ = getpid();
    }
#endif
    while (static_cast<int>(threads_.size()) < workers) {
      const int part = static_cast<int>(threads_.size()) + 1;
      const uint64_t seen = epoch_.load();
      threads_.emplace_back([this, part, seen] { serve(part, seen); });
    }
  }

  void serve(int part, uint64_t seen) {
    const SerialOps serial;
    for (;;) {
      wait_until([&] { return epoch_.load() != seen; });
      seen = epoch_.load();
      if (stop_.load()) return;
      if (part < static_cast<int>(seen & 255)) {
        execute(part);
        running_.fetch_sub(1);
        wake();
      }
    }
  }

  std::mutex run_mutex_, mutex_;
  std::condition_variable changed_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  std::exception_ptr error_;
  std::atomic<uint64_t> epoch_{0}, generation_{0};
  std::atomic<int> parts_{1}, arrived_{0}, running_{0}, sleepers_{0};
  std::atomic<bool> failed_{false}, stop_{false};
#ifndef _WIN32
  pid_t pid_ = getpid();
#endif
};

}  // namespace spikefit
