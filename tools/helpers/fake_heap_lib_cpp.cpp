// The C++ part of the heap profile tests' library: a member function whose name must
// come out demangled, as ebbtest::Cache::fill(void (*)(), unsigned long).
#include <stdint.h>

extern "C" volatile unsigned long fake_heap_calls;

namespace ebbtest {
struct Cache {
    static uintptr_t fill(void (*alloc)(), unsigned long n);
};

uintptr_t Cache::fill(void (*alloc)(), unsigned long n) {
    alloc();
    fake_heap_calls += n;
    return (uintptr_t)__builtin_return_address(0);
}
} // namespace ebbtest

// The helper finds the member function through this, without spelling the mangled name.
extern "C" void *fake_cpp_fill_address(void) { return (void *)&ebbtest::Cache::fill; }
