// Linked into every executable of the TSan build (STREAMGEN_SANITIZE=thread,
// CMakeLists.txt), nowhere else.
//
// Debian's abseil is not instrumented, so TSan does not see absl::Mutex: two
// threads that touch a member under the same absl::Mutex look like a race, and
// so does everything ordered by gRPC's own locks (grpc_core::Mutex and gpr_mu
// are absl::Mutex in Debian's gRPC 1.51). Rebuilding abseil with TSan would
// also mean rebuilding gRPC against it. Instead, this file defines absl::Mutex's
// and absl::CondVar's public entry points in the executable, which the dynamic
// linker then prefers over libabsl_synchronization.so's for every caller (our
// code, gRPC, abseil itself): each forwards to the real function (dlsym
// RTLD_NEXT) and tells TSan the happens-before edge it makes, as abseil's own
// TSan build does with its ABSL_TSAN_MUTEX_* annotations:
//   a lock (once held):  __tsan_acquire(mu)   an unlock (before):  __tsan_release(mu)
// A wait that releases and retakes the mutex (Await*, CondVar::Wait*) is both.
// abseil evaluates a Condition with the mutex held, but possibly on another
// thread and after retaking the mutex inside itself, so each Condition passed
// to Await* / *LockWhen* is wrapped: acquire, evaluate, release.
// Only ordering is annotated, not mutex identity: TSan's reports then say
// nothing about which absl::Mutex was held, and its lock-order (deadlock)
// checking does not cover absl::Mutex.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

#define STREAMGEN_STR2(x) #x
#define STREAMGEN_STR(x) STREAMGEN_STR2(x)

// The real function: `symbol` is the Itanium-mangled name after
// "_ZN4absl<inline namespace>" (e.g. "5Mutex4LockEv").
template <typename F>
F Real(const char* symbol) {
  const char* ns = STREAMGEN_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = "_ZN4absl" + std::to_string(std::strlen(ns)) + ns + symbol;
  void* real = ::dlsym(RTLD_NEXT, name.c_str());
  if (real == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found: %s\n", name.c_str(), ::dlerror());
    std::abort();
  }
  return reinterpret_cast<F>(real);
}

// `cond`, evaluated between an acquire and a release of `mu`.
class AnnotatedCondition {
 public:
  AnnotatedCondition(const absl::Condition& cond, const absl::Mutex* mu)
      : cond_(&cond), mu_(const_cast<absl::Mutex*>(mu)), wrapped_(&Eval, this) {}
  AnnotatedCondition(const AnnotatedCondition&) = delete;
  AnnotatedCondition& operator=(const AnnotatedCondition&) = delete;
  const absl::Condition& get() const { return wrapped_; }

 private:
  static bool Eval(void* arg) {
    auto* self = static_cast<AnnotatedCondition*>(arg);
    __tsan_acquire(self->mu_);
    const bool result = self->cond_->Eval();
    __tsan_release(self->mu_);
    return result;
  }

  const absl::Condition* cond_;
  void* mu_;
  absl::Condition wrapped_;
};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::Unlock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}

bool Mutex::TryLock() {
  static auto real = Real<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::ReaderLock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::ReaderUnlock() {
  static auto real = Real<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

bool Mutex::ReaderTryLock() {
  static auto real = Real<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>("5Mutex8LockWhenERKNS0_9ConditionE");
  const AnnotatedCondition annotated(cond, this);
  real(this, annotated.get());
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  const AnnotatedCondition annotated(cond, this);
  real(this, annotated.get());
  __tsan_acquire(this);
}

// The *WithTimeout / *WithDeadline locks return with the mutex held either way.
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const AnnotatedCondition annotated(cond, this);
  const bool met = real(this, annotated.get(), timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const AnnotatedCondition annotated(cond, this);
  const bool met = real(this, annotated.get(), timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const AnnotatedCondition annotated(cond, this);
  const bool met = real(this, annotated.get(), deadline);
  __tsan_acquire(this);
  return met;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const AnnotatedCondition annotated(cond, this);
  const bool met = real(this, annotated.get(), deadline);
  __tsan_acquire(this);
  return met;
}

// Await* may release the mutex while it waits and retake it before returning.
void Mutex::Await(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>("5Mutex5AwaitERKNS0_9ConditionE");
  const AnnotatedCondition annotated(cond, this);
  __tsan_release(this);
  real(this, annotated.get());
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const AnnotatedCondition annotated(cond, this);
  __tsan_release(this);
  const bool met = real(this, annotated.get(), timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const AnnotatedCondition annotated(cond, this);
  __tsan_release(this);
  const bool met = real(this, annotated.get(), deadline);
  __tsan_acquire(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  static auto real = Real<void (*)(CondVar*, Mutex*)>("7CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, Duration)>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool timed_out = real(this, mu, timeout);
  __tsan_acquire(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, Time)>(
      "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool timed_out = real(this, mu, deadline);
  __tsan_acquire(mu);
  return timed_out;
}

ABSL_NAMESPACE_END
}  // namespace absl
