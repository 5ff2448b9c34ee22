// Linked into every executable of the TSan build, next to tsan_absl_mutex.cc.
//
// gRPC's C++ API keeps each call's state (the ops of a write or a Finish, the
// completion tag and its std::function) in objects of its header templates,
// compiled into our instrumented code, and libgrpc orders them: the thread that
// starts a batch fills the ops and the tag, and the thread that takes the
// batch's completion event from the completion queue (Debian's build runs
// callbacks on "nexting" threads that call grpc_completion_queue_next) reads
// them and runs the tag. Inside libgrpc that hand-over goes through atomics
// that TSan cannot see, so every write would show as a race with its
// completion. This states libgrpc's contract to TSan instead: a batch started
// with `tag` happens-before the completion event that returns `tag`.
//   grpc_call_start_batch(..., tag):  __tsan_release(tag), then start it
//   grpc_completion_queue_next/pluck returning an event for tag:  __tsan_acquire(tag)
// As with abseil's mutexes, the executable's definitions take precedence over
// libgrpc's for libgrpc++'s calls; each forwards to libgrpc's (dlsym RTLD_NEXT).
#include <dlfcn.h>
#include <grpc/grpc.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

namespace {

template <typename F>
F Real(const char* name) {
  void* real = ::dlsym(RTLD_NEXT, name);
  if (real == nullptr) {
    std::fprintf(stderr, "tsan_grpc_cq: %s not found: %s\n", name, ::dlerror());
    std::abort();
  }
  return reinterpret_cast<F>(real);
}

void AcquireTag(const grpc_event& event) {
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) __tsan_acquire(event.tag);
}

}  // namespace

extern "C" {

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops, size_t nops, void* tag,
                                      void* reserved) {
  static auto real = Real<decltype(&grpc_call_start_batch)>("grpc_call_start_batch");
  if (tag != nullptr) __tsan_release(tag);
  return real(call, ops, nops, tag, reserved);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq, gpr_timespec deadline,
                                      void* reserved) {
  static auto real = Real<decltype(&grpc_completion_queue_next)>("grpc_completion_queue_next");
  const grpc_event event = real(cq, deadline, reserved);
  AcquireTag(event);
  return event;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag, gpr_timespec deadline,
                                       void* reserved) {
  static auto real = Real<decltype(&grpc_completion_queue_pluck)>("grpc_completion_queue_pluck");
  const grpc_event event = real(cq, tag, deadline, reserved);
  AcquireTag(event);
  return event;
}

}  // extern "C"
