// A small thread pool for msforge's kernels: the calling thread plus one worker per further CPU this process may run
// on (or MSFORGE_NUM_THREADS - 1 workers). Included by each kernel's source (msforge.kernels hashes this header into
// every kernel's build key).
//
// Between parallel regions a worker spins for kSpinMicroseconds, long enough to catch the next region of the same
// kernel, then sleeps: MindSpore runs its own kernels on the same cores between two of ours, and a worker that kept
// spinning would slow them. Measured on the default ConvLSTM's training step with the convolution kernel
// (bench/formulations.py): with an OpenMP team, which spins by default, the kernel made the step 0.95x as fast; with
// the team told to sleep at once (OMP_WAIT_POLICY=passive), 1.11x; with this pool, 1.19x.
#ifndef MSFORGE_KERNELS_THREAD_POOL_H_
#define MSFORGE_KERNELS_THREAD_POOL_H_

#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace msforge {
namespace {  // each kernel library has its own pool: nothing is bound across libraries

// MSFORGE_NUM_THREADS when set to a positive number (e.g. to share the cores between data-parallel workers on one
// machine), else the CPUs this process may run on.
int ThreadsWanted() {
  const char* wanted = std::getenv("MSFORGE_NUM_THREADS");
  if (wanted && std::atoi(wanted) > 0) return std::atoi(wanted);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
  return 1;
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }
  int Threads() const { return static_cast<int>(workers_.size()) + 1; }
  static bool InPool() { return InPoolFlag(); }

  // fn(i, n) for i in [0, n), spread over the threads; returns when all calls have returned. Called from inside a
  // region, it runs the calls itself.
  void ParallelFor(int n, const std::function<void(int, int)>& fn) {
    if (n <= 1 || workers_.empty() || InPoolFlag()) {
      for (int i = 0; i < n; ++i) fn(i, n);
      return;
    }
    job_ = &fn;
    job_size_ = n;
    next_.store(0);
    pending_.store(static_cast<int>(workers_.size()));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    InPoolFlag() = true;
    RunShare();
    InPoolFlag() = false;
    while (pending_.load(std::memory_order_acquire) != 0) Pause();
  }

 private:
  static constexpr int kSpinMicroseconds = 50;
  static void Pause() { __builtin_ia32_pause(); }
  void RunShare() {
    for (int i = next_.fetch_add(1); i < job_size_; i = next_.fetch_add(1)) (*job_)(i, job_size_);
  }
  static bool& InPoolFlag() {
    static thread_local bool in_pool = false;
    return in_pool;
  }
  void Work() {
    InPoolFlag() = true;
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicroseconds);
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
        for (int i = 0; i < 32; ++i) Pause();
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      RunShare();
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_{0}, pending_{0};
  const std::function<void(int, int)>* job_ = nullptr;
  int job_size_ = 0;
  bool stop_ = false;
};

// This library's pool, made at first use.
ThreadPool& Pool() {
  static ThreadPool pool(ThreadsWanted());
  return pool;
}

// How many parts to split `total` items over: one per thread, or 1 when the call touches fewer than
// kMinParallelElements floats (waking a worker would cost more than it saves).
constexpr int64_t kMinParallelElements = 1 << 15;
int Parts(int64_t total, int64_t elements) {
  if (elements < kMinParallelElements || total < 2) return 1;
  return static_cast<int>(total < Pool().Threads() ? total : Pool().Threads());
}

// fn(part, begin, end) for `parts` contiguous ranges covering [0, total), in parallel.
void ParallelRanges(int parts, int64_t total, const std::function<void(int, int64_t, int64_t)>& fn) {
  Pool().ParallelFor(parts, [&](int i, int n) { fn(i, total * i / n, total * (i + 1) / n); });
}

}  // namespace
}  // namespace msforge

#endif  // MSFORGE_KERNELS_THREAD_POOL_H_
