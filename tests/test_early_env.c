/* Options before libc has set environ, in a real program started with a large
 * environment.
 *
 * glibc runs a program's preinit functions before libc's own initialisation, which is
 * what sets environ; this program's preinit function allocates, so ebbmalloc (linked in,
 * replacing malloc) initialises right then, as it does when the dynamic loader
 * allocates first.  The program is started again (`--child`) with 256 KiB of
 * variables, as Kubernetes injects for every service of a namespace, and then
 * EBB_SOFT_LIMIT=123M: the option must take effect (ebb_stats reports the soft limit). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbmalloc.h"
#include "hostile_run.h"

extern char **environ;

static int environ_was_null = -1;

static void allocate_before_libc(int argc, char **argv, char **envp) {
    (void)argc, (void)argv, (void)envp;
    environ_was_null = environ == NULL;
    void *volatile p = malloc(100);
    free(p);
}
__attribute__((section(".preinit_array"), used)) static void (*const preinit)(int, char **,
                                                                              char **) = allocate_before_libc;

/* Where EBB_SOFT_LIMIT starts in the environment the kernel gave us; -1 if absent. */
static long option_offset(void) {
    FILE *f = fopen("/proc/self/environ", "r");
    if (!f) return -1;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (!strncmp(buf + i, "EBB_SOFT_LIMIT=", 15)) return (long)i;
    return -1;
}

static int child(void) {
    struct ebb_stats st;
    ebb_stats(&st);
    printf("early %d offset %ld soft_limit %llu\n", environ_was_null, option_offset(),
           (unsigned long long)st.soft_limit);
    return 0;
}

static char self[4096];

static void run_with(const char *option, int *early, long *offset, unsigned long long *limit) {
    enum { VARS = 64, LEN = 4096 };
    char *env[VARS + 2];
    for (int n = 0; n < VARS; n++) {
        env[n] = malloc(LEN + 1);
        int k = snprintf(env[n], LEN, "SVC_%02d_SERVICE_HOST=", n);
        memset(env[n] + k, 'a' + n % 26, LEN - (size_t)k);
        env[n][LEN] = 0;
    }
    env[VARS] = (char *)option;
    env[VARS + 1] = NULL;
    char *argv[] = {self, "--child", NULL};
    static struct run_result r;
    run_program(self, argv, env, 60, &r);
    for (int n = 0; n < VARS; n++) free(env[n]);
    if (r.timed_out || !WIFEXITED(r.status) || WEXITSTATUS(r.status))
        fail_msg("child failed (status 0x%x): %s %s", r.status, r.out, r.err);
    if (sscanf(r.out, "early %d offset %ld soft_limit %llu", early, offset, limit) != 3)
        fail_msg("unexpected output: %s", r.out);
}

static void option_after_256k_taken_before_environ(void **st) {
    (void)st;
    int early;
    long offset;
    unsigned long long limit;
    run_with("EBB_SOFT_LIMIT=123M", &early, &offset, &limit);
    assert_int_equal(early, 1);            /* ebbmalloc started before libc set environ */
    assert_true(offset >= 256 * 1024);     /* the option sits past 256 KiB */
    assert_int_equal(limit, 123ull << 20); /* and it took effect */
    run_with("EBB_OTHER=1", &early, &offset, &limit);
    assert_int_equal(early, 1);
    assert_int_equal(limit, 0); /* the effect was the option's */
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--child")) return child();
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(option_after_256k_taken_before_environ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
