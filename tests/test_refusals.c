/* Hostile environments: a kernel or a container that refuses what ebbmalloc asks for.
 *
 * Each case runs in a fresh process (this program again, `--case NAME`), which replaces
 * OS hooks (alloc/internal.h: ebbi_os) with ones that refuse, before its first call
 * into ebbmalloc, or installs a real seccomp filter.  The child checks that allocation
 * stays correct (every block's contents verified) and that the accounting stays true (a
 * refused release leaves memory counted resident, and mincore agrees that it is); the
 * parent checks what the child said on stderr: with EBB_VERBOSE=1 each refusal exactly
 * once, without it nothing.
 *
 * The environment cases: the options read before libc has set environ, from the initial
 * stack, from /proc/self/environ (256 KiB of environment before the option), and from
 * neither (then read again once environ is set). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_ns.h"
#include "hostile_run.h"
#include "internal.h"

extern char **environ;

/* ---------------------------------------------------------------- the child */
#define CHECK(c)                                                \
    do {                                                        \
        if (!(c)) {                                             \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); \
            fflush(stdout);                                     \
            _exit(1);                                           \
        }                                                       \
    } while (0)

#define MiB ((size_t)1 << 20)

static struct ebb_os_hooks real;
static int refuse_errno = EPERM;
static int release_calls, remap_calls, hugepage_calls, environ_opens;
static const char *refused_prefix;

static int refuse_release(void *p, size_t n) {
    (void)p, (void)n;
    release_calls++;
    errno = refuse_errno;
    return -1;
}
static void *refuse_remap(void *p, size_t a, size_t b, void *to) {
    (void)p, (void)a, (void)b, (void)to;
    remap_calls++;
    errno = EPERM;
    return NULL;
}
static int refuse_hugepage(void *p, size_t n, bool on) {
    (void)p, (void)n, (void)on;
    hugepage_calls++;
    errno = EPERM;
    return -1;
}
static int filtered_open(const char *path, int flags, int mode) {
    if (!strcmp(path, "/proc/self/environ")) environ_opens++;
    if (refused_prefix && !strncmp(path, refused_prefix, strlen(refused_prefix))) {
        errno = ENOENT;
        return -1;
    }
    return real.open(path, flags, mode);
}
static void *refuse_map_shared(int fd, size_t n) {
    (void)fd, (void)n;
    errno = ENODEV;
    return NULL;
}
static char **no_start_env(void) { return NULL; }

static uint64_t pattern(const void *base, size_t i, unsigned seed) {
    return ((uint64_t)(uintptr_t)base * 31 + i) * 0x9E3779B97F4A7C15ull + seed;
}
static void fill(void *p, size_t n, unsigned seed) {
    uint64_t *w = p;
    for (size_t i = 0; i < n / 8; i++) w[i] = pattern(p, i, seed);
}
/* The first n bytes of p hold what fill(base, ..., seed) wrote (base: where they were). */
static bool intact_as(const void *p, const void *base, size_t n, unsigned seed) {
    const uint64_t *w = p;
    for (size_t i = 0; i < n / 8; i++)
        if (w[i] != pattern(base, i, seed)) return false;
    return true;
}
static bool intact(const void *p, size_t n, unsigned seed) { return intact_as(p, p, n, seed); }

/* Bytes of [p, p + n) in resident pages, as the kernel says. */
static size_t resident(void *p, size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(pg - 1), b = ((uintptr_t)p + n + pg - 1) & ~(pg - 1);
    size_t pages = (b - a) / pg, in = 0;
    unsigned char *vec = mmap(NULL, pages, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(vec != MAP_FAILED);
    CHECK(mincore((void *)a, b - a, vec) == 0);
    for (size_t i = 0; i < pages; i++) in += vec[i] & 1;
    munmap(vec, pages);
    return in * pg;
}

/* Blocks of every kind (small, thread-cache bypassing, large, own mapping), written,
 * resized, checked and freed. */
static void churn(void) {
    enum { N = 1500 };
    static void *b[N];
    static size_t sz[N];
    static const size_t sizes[] = {16, 48, 100, 512, 4000, 9000, 40000, 300000, 1 << 20, 40 << 20};
    for (int i = 0; i < N; i++) {
        sz[i] = sizes[i % 10] == (40 << 20) && i > 20 ? 24 : sizes[i % 10];
        b[i] = ebb_malloc(sz[i]);
        CHECK(b[i] && ((uintptr_t)b[i] & 15) == 0);
        fill(b[i], sz[i], 1);
    }
    for (int i = 1; i < N; i += 2) {
        CHECK(intact(b[i], sz[i], 1));
        void *q = ebb_realloc(b[i], sz[i] * 2 + 8);
        CHECK(q && intact_as(q, b[i], sz[i], 1));
        b[i] = q;
        sz[i] = sz[i] * 2 + 8;
        fill(b[i], sz[i], 2);
    }
    for (int i = 0; i < N; i++) {
        CHECK(intact(b[i], sz[i], i & 1 ? 2 : 1));
        ebb_free(b[i]);
    }
    CHECK(ebbi_page_heap_verify() == NULL);
}

/* 100 MiB in 1 MiB blocks, freed: more than the page heap keeps resident, so the page heap
 * tries to release some at once; then malloc_trim asks for everything. */
static void release_workload(bool for_good) {
    enum { NB = 100 };
    void *b[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = ebb_malloc(MiB);
        CHECK(b[i]);
        fill(b[i], MiB, 3);
    }
    for (int i = 0; i < NB; i++) {
        CHECK(intact(b[i], MiB, 3));
        ebb_free(b[i]);
    }
    int trimmed = ebb_malloc_trim(0);
    if (for_good) CHECK(trimmed == 0); /* nothing could go back, and none was cut out for it */
    struct ebb_stats st;
    ebb_stats(&st);
    CHECK(st.release_calls == 0);
    CHECK(st.released_total == 0);
    CHECK(st.page_free >= NB * MiB);                                /* counted resident ... */
    for (int i = 0; i < NB; i++) CHECK(resident(b[i], MiB) == MiB); /* ... and it is */
    CHECK(st.resident == st.in_use + st.thread_cache + st.central + st.page_free + st.metadata);
    CHECK(ebbi_page_heap_verify() == NULL);
}

/* Free 16 KiB objects in spans kept alive by their neighbours: their tails (all but the
 * first kernel page) are what the central tier would release. */
static void tails_workload(void) {
    enum { NT = 128 };
    void *t[NT];
    for (int i = 0; i < NT; i++) {
        t[i] = ebb_malloc(16384);
        CHECK(t[i]);
        fill(t[i], 16384, 4);
    }
    for (int i = 1; i < NT; i += 2) ebb_free(t[i]);
    struct ebb_stats before, after;
    ebb_stats(&before);
    ebb_malloc_trim(0);
    ebb_stats(&after);
    CHECK(after.released == before.released); /* no tail counted as gone */
    CHECK(after.released_total == before.released_total);
    for (int i = 1; i < NT; i += 2) CHECK(resident((char *)t[i] + 4096, 16384 - 4096) == 16384 - 4096);
    for (int i = 0; i < NT; i += 2) {
        CHECK(intact(t[i], 16384, 4));
        ebb_free(t[i]);
    }
}

static void remap_workload(void) {
    char *p = ebb_malloc(40 * MiB); /* above EBB_MMAP_THRESHOLD: a mapping of its own */
    CHECK(p);
    fill(p, 40 * MiB, 5);
    char *q = ebb_realloc(p, 56 * MiB); /* mremap refused: copied */
    CHECK(q && intact_as(q, p, 40 * MiB, 5));
    fill(q, 56 * MiB, 6);
    char *r = ebb_realloc(q, 34 * MiB);
    CHECK(r && intact_as(r, q, 34 * MiB, 6));
    ebb_free(r);
}

static void publish_and_look(bool expect_page) {
    char name[128];
    ebbi_shm_name(name, sizeof name);
    ebbi_shm_publish();
    ebbi_shm_publish();
    CHECK((access(name, F_OK) == 0) == expect_page);
    if (expect_page) ebbi_shm_unlink();
}

/* A real seccomp filter: madvise and mremap fail with EPERM, as a container's profile
 * may make them. */
static void refuse_by_seccomp(void) {
#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mremap, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
    CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
    CHECK(madvise(&prog, 1, MADV_NORMAL) == -1 && errno == EPERM); /* the filter is on */
}

/* The first allocation with environ not yet set (as when the dynamic loader or a preinit
 * function allocates): its options come from wherever os.c finds them. */
static void first_allocation_without_environ(void) {
    char **saved = environ;
    environ = NULL;
    void *p = ebb_malloc(64);
    environ = saved;
    CHECK(p);
    ebb_free(p);
}

static int run_child(const char *name) {
    real = ebbi_os;
    ebbi_os.open = filtered_open;
    if (!strcmp(name, "release")) {
        ebbi_os.release = refuse_release;
        release_workload(true);
        churn();
        CHECK(release_calls == 1); /* EPERM: not tried again */
    } else if (!strcmp(name, "release_einval")) {
        refuse_errno = EINVAL; /* as with mlockall: refused, but maybe not everywhere */
        ebbi_os.release = refuse_release;
        release_workload(false);
        tails_workload();
        churn();
        CHECK(release_calls > 1);
    } else if (!strcmp(name, "remap")) {
        ebbi_os.remap = refuse_remap;
        remap_workload();
        remap_workload();
        churn();
        CHECK(remap_calls == 1);
    } else if (!strcmp(name, "hugepage")) {
        ebbi_os.hugepage = refuse_hugepage;
        churn();
        churn();
        CHECK(ebbi_opt(EBB_OPT_HUGEPAGES) == 0 && hugepage_calls == 1);
    } else if (!strcmp(name, "proc")) {
        refused_prefix = "/proc/";
        first_allocation_without_environ();
        CHECK(ebbi_opt(EBB_OPT_RELEASE_MS) == 777); /* read from the initial stack */
        churn();
        char page[128];
        ebbi_shm_name(page, sizeof page);
        char want[64];
        snprintf(want, sizeof want, "/dev/shm/ebbmalloc.0.%d", (int)getpid());
        CHECK(!strcmp(page, want)); /* the namespace is unknown */
        publish_and_look(true);
    } else if (!strcmp(name, "shm")) {
        refused_prefix = "/dev/shm";
        churn();
        publish_and_look(false);
    } else if (!strcmp(name, "shm_full")) {
        /* A /dev/shm of one kernel page, already full, in a mount namespace of this
         * process's own (a user namespace too where it is not root): the stats page's file
         * is created and sized, but no page can back it. */
        char opt[64];
        snprintf(opt, sizeof opt, "mode=1777,size=%ld", sysconf(_SC_PAGESIZE));
        const char *what;
        if (ebb_private_dev_shm(opt, &what)) {
            printf("%s: %s\n", what, strerror(errno));
            return 1;
        }
        int fd = open("/dev/shm/filler", O_CREAT | O_WRONLY, 0600);
        CHECK(fd >= 0);
        static char fill[65536];
        while (write(fd, fill, (size_t)sysconf(_SC_PAGESIZE)) > 0) {}
        CHECK(errno == ENOSPC);
        close(fd);
        churn();
        publish_and_look(false); /* no SIGBUS at its first store, and no file left */
    } else if (!strcmp(name, "map_shared")) {
        ebbi_os.map_shared = refuse_map_shared;
        churn();
        publish_and_look(false); /* and no file left behind */
    } else if (!strcmp(name, "seccomp")) {
        refuse_by_seccomp();
        release_workload(true);
        remap_workload();
        churn();
    } else if (!strcmp(name, "env_stack")) {
        first_allocation_without_environ();
        CHECK(ebbi_opt(EBB_OPT_RELEASE_MS) == 4321);
        CHECK(environ_opens == 0); /* no /proc needed */
    } else if (!strcmp(name, "env_proc")) {
        ebbi_os.start_env = no_start_env;
        first_allocation_without_environ();
        CHECK(ebbi_opt(EBB_OPT_RELEASE_MS) == 4321);
        CHECK(environ_opens > 0);
    } else if (!strcmp(name, "env_blind")) {
        ebbi_os.start_env = no_start_env;
        refused_prefix = "/proc/";
        first_allocation_without_environ();
        CHECK(ebbi_opt(EBB_OPT_RELEASE_MS) == 1000); /* nothing to read: defaults */
        ebbi_options_late();                         /* what the constructor does */
        CHECK(ebbi_opt(EBB_OPT_RELEASE_MS) == 4321);
        CHECK(ebbi_opt(EBB_OPT_THREAD_CACHE_ONE) == (int64_t)(2 * MiB)); /* fixed at start */
        churn();
    } else {
        printf("unknown case %s\n", name);
        return 2;
    }
    printf("PASS %s\n", name);
    return 0;
}

/* ---------------------------------------------------------------- the parent */
struct expect {
    const char *line; /* a substring of the line */
    int count;        /* times it must appear */
};

static char self[4096];

/* 256 KiB of variables (as Kubernetes injects for every service of a namespace) before
 * the options, so that they come after the first 256 KiB of the environment. */
static char **big_environment(char *const extra[]) {
    enum { VARS = 64, LEN = 4096 };
    static char *vars[VARS + 8];
    int n = 0;
    for (; n < VARS; n++) {
        vars[n] = malloc(LEN + 1);
        int k = snprintf(vars[n], LEN, "SVC_%02d_SERVICE_HOST=", n);
        memset(vars[n] + k, 'a' + n % 26, LEN - (size_t)k);
        vars[n][LEN] = 0;
    }
    for (int i = 0; extra[i]; i++) vars[n++] = extra[i];
    vars[n] = NULL;
    return env_with(vars);
}

static void run_case(const char *name, char *const extra[], bool big_env, const struct expect *on,
                     int on_total, const struct expect *off, int off_total) {
    for (int verbose = 0; verbose < 2; verbose++) {
        char *vars[16];
        int n = 0;
        vars[n++] = verbose ? "EBB_VERBOSE=1" : "EBB_VERBOSE=0";
        for (int i = 0; extra[i]; i++) vars[n++] = extra[i];
        vars[n] = NULL;
        char **env = big_env ? big_environment(vars) : env_with(vars);
        char *argv[] = {self, "--case", (char *)name, NULL};
        static struct run_result r;
        run_program(self, argv, env, 180, &r);
        free(env);
        if (r.timed_out) fail_msg("case %s did not end within 180 s", name);
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !strstr(r.out, "PASS"))
            fail_msg("case %s (EBB_VERBOSE=%d) failed, status 0x%x:\n%s\nstderr:\n%s", name, verbose,
                     r.status, r.out, r.err);
        const struct expect *ex = verbose ? on : off;
        for (int i = 0; ex && ex[i].line; i++) {
            int got = count_lines(r.err, ex[i].line);
            if (got != ex[i].count)
                fail_msg("case %s (EBB_VERBOSE=%d): \"%s\" %d times, not %d; stderr:\n%s", name, verbose,
                         ex[i].line, got, ex[i].count, r.err);
        }
        int total = count_lines(r.err, "ebbmalloc:");
        if (total != (verbose ? on_total : off_total))
            fail_msg("case %s (EBB_VERBOSE=%d): %d lines from ebbmalloc, not %d; stderr:\n%s", name, verbose,
                     total, verbose ? on_total : off_total, r.err);
    }
}

static char *quiet[] = {"EBB_BACKGROUND=0", "EBB_STATS_SHM=0", NULL};

static void release_refused(void **st) {
    (void)st;
    static const struct expect on[] = {
        {"ebbmalloc: madvise(MADV_DONTNEED) refused (EPERM): free memory stays resident", 1}, {0}};
    run_case("release", quiet, false, on, 1, NULL, 0);
}

static void release_refused_not_for_good(void **st) {
    (void)st;
    static const struct expect on[] = {
        {"ebbmalloc: madvise(MADV_DONTNEED) refused (EINVAL): free memory stays resident", 1}, {0}};
    run_case("release_einval", quiet, false, on, 1, NULL, 0);
}

static void remap_refused(void **st) {
    (void)st;
    static const struct expect on[] = {{"ebbmalloc: mremap refused (EPERM): realloc copies", 1}, {0}};
    run_case("remap", quiet, false, on, 1, NULL, 0);
}

static void hugepage_refused(void **st) {
    (void)st;
    static char *vars[] = {"EBB_BACKGROUND=0", "EBB_STATS_SHM=0", "EBB_HUGEPAGES=0", NULL};
    static const struct expect on[] = {{"ebbmalloc: madvise(MADV_NOHUGEPAGE) refused (EPERM)", 1}, {0}};
    run_case("hugepage", vars, false, on, 1, NULL, 0);
}

static void no_proc(void **st) {
    (void)st;
    static char *vars[] = {"EBB_BACKGROUND=0", "EBB_RELEASE_MS=777", NULL};
    static const struct expect on[] = {{"ebbmalloc: cannot open /proc/self/", 1}, {0}};
    run_case("proc", vars, false, on, 1, NULL, 0);
}

static void no_dev_shm(void **st) {
    (void)st;
    static char *vars[] = {"EBB_BACKGROUND=0", "EBB_STATS_SHM=1", NULL};
    static const struct expect on[] = {
        {"ebbmalloc: cannot create /dev/shm/ebbmalloc.", 1}, {"no live stats page for ebb-inspect", 1}, {0}};
    run_case("shm", vars, false, on, 1, NULL, 0);
}

/* A full /dev/shm (a container's 64 MiB one, say): the page is refused, named, and the
 * process lives on (a page ftruncate only promised would raise SIGBUS at its first
 * store). */
static void full_dev_shm(void **st) {
    (void)st;
    static char *vars[] = {"EBB_BACKGROUND=0", "EBB_STATS_SHM=1", NULL};
    static const struct expect on[] = {
        {"ebbmalloc: cannot back /dev/shm/ebbmalloc.", 1}, {"(ENOSPC)", 1}, {0}};
    run_case("shm_full", vars, false, on, 1, NULL, 0);
}

static void shared_mapping_refused(void **st) {
    (void)st;
    static char *vars[] = {"EBB_BACKGROUND=0", "EBB_STATS_SHM=1", NULL};
    static const struct expect on[] = {{"ebbmalloc: cannot map /dev/shm/ebbmalloc.", 1}, {0}};
    run_case("map_shared", vars, false, on, 1, NULL, 0);
}

static void seccomp_filter(void **st) {
    (void)st;
    static const struct expect on[] = {
        {"ebbmalloc: madvise(MADV_DONTNEED) refused (EPERM): free memory stays resident", 1},
        {"ebbmalloc: mremap refused (EPERM)", 1},
        {0}};
    run_case("seccomp", quiet, false, on, 2, NULL, 0);
}

static char *env_opts[] = {"EBB_BACKGROUND=0", "EBB_STATS_SHM=0", "EBB_RELEASE_MS=4321",
                           "EBB_THREAD_CACHE_ONE=1M", NULL};

static void environment_from_the_stack(void **st) {
    (void)st;
    run_case("env_stack", env_opts, true, NULL, 0, NULL, 0);
}

static void environment_from_proc(void **st) {
    (void)st;
    run_case("env_proc", env_opts, true, NULL, 0, NULL, 0);
}

/* No source at all: the options are read again once environ is set; the one fixed at
 * start is named on stderr whatever EBB_VERBOSE says. */
static void environment_unreadable(void **st) {
    (void)st;
    static const struct expect on[] = {{"ebbmalloc: EBB_THREAD_CACHE_ONE not applied", 1},
                                       {"ebbmalloc: cannot open /proc/self/environ (ENOENT)", 1},
                                       {"ebbmalloc: options read once libc set environ", 1},
                                       {0}};
    static const struct expect off[] = {{"ebbmalloc: EBB_THREAD_CACHE_ONE not applied", 1}, {0}};
    run_case("env_blind", env_opts, true, on, 3, off, 1);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--case")) return run_child(argv[2]);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(release_refused),
        cmocka_unit_test(release_refused_not_for_good),
        cmocka_unit_test(remap_refused),
        cmocka_unit_test(hugepage_refused),
        cmocka_unit_test(no_proc),
        cmocka_unit_test(no_dev_shm),
        cmocka_unit_test(full_dev_shm),
        cmocka_unit_test(shared_mapping_refused),
        cmocka_unit_test(seccomp_filter),
        cmocka_unit_test(environment_from_the_stack),
        cmocka_unit_test(environment_from_proc),
        cmocka_unit_test(environment_unreadable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
