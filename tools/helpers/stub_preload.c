/* Test helper for ebb-run: a library to preload that does nothing but exist, so that
 * ebb-run's tests do not depend on the allocator. */
int ebb_stub_preload_marker(void);
int ebb_stub_preload_marker(void) { return 42; }
