/* Test helper for tests/test_bench_proc.c: a preload library that loads fine but
 * does not provide malloc, so the child still runs on glibc's malloc and ebb-bench
 * must refuse a configuration that preloads it as an allocator. */
int ebb_bench_test_preload_none_marker(void);

int ebb_bench_test_preload_none_marker(void) { return 42; }
