/* ebb-inspect against real processes started here: a program with many glibc arenas,
 * a JVM, processes publishing good and bad ebbmalloc stats pages, a process using the
 * real ebbmalloc, and the error cases (no such pid, exited, unreadable). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "inspect.h"
#include "testutil.h"

#define MiB (1024.0 * 1024.0)

static const char *need(const char *name) {
    const char *v = test_env(name);
    if (!v) fail_msg("%s is not set: run the tests through meson", name);
    return v;
}

/* Run ebb-inspect with arguments; returns the exit code (or 128+signal). */
static int inspect_cli(char **out, char **err, bool as_nobody, ...) {
    static char *nobody_copy;
    if (as_nobody && !nobody_copy) assert_non_null(nobody_copy = copy_for_nobody(need("EBB_INSPECT")));
    char *argv[16] = {as_nobody ? nobody_copy : (char *)need("EBB_INSPECT")};
    int n = 1;
    va_list ap;
    va_start(ap, as_nobody);
    for (char *a; (a = va_arg(ap, char *)) && n < 15;) argv[n++] = a;
    va_end(ap);
    int st = run_capture(argv, NULL, as_nobody, 60, out, err);
    assert_true(st != -1);
    return exit_code(st);
}

static struct jval *inspect_json(pid_t pid, bool as_nobody, int want_rc, const char *extra) {
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)pid);
    int rc = extra ? inspect_cli(&out, &err, as_nobody, "--json", extra, p, NULL)
                   : inspect_cli(&out, &err, as_nobody, "--json", p, NULL);
    if (rc != want_rc) fail_msg("ebb-inspect exited %d, expected %d; stderr: %s", rc, want_rc, err);
    struct jval *j = json_parse(out);
    if (!j) fail_msg("ebb-inspect --json printed no valid JSON: %s", out);
    free(out);
    free(err);
    return j;
}

/* ---- glibc arenas ---- */

struct hog {
    struct child c;
    uint64_t heaps[64];
    int thread_of[64];
    int nheaps;
};

static void hog_start(struct hog *h, const char *threads, const char *mib, const char *big, bool nobody) {
    static char *nobody_copy;
    if (nobody && !nobody_copy) assert_non_null(nobody_copy = copy_for_nobody(need("ARENA_HOG")));
    char *argv[] = {nobody ? nobody_copy : (char *)need("ARENA_HOG"), (char *)threads, (char *)mib,
                    (char *)big, NULL};
    memset(h, 0, sizeof(*h));
    assert_int_equal(child_start(&h->c, argv, NULL, nobody), 0);
    if (!child_wait_line(&h->c, "ready", 60)) fail_msg("arena-hog did not get ready");
    for (char *l = h->c.buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        unsigned long long a;
        int t;
        if (sscanf(l, "heap 0x%llx thread %d", &a, &t) == 2 && h->nheaps < 64) {
            h->heaps[h->nheaps] = a;
            h->thread_of[h->nheaps++] = t;
        }
    }
}

static void check_hog(struct hog *h, const struct jval *j, bool verified) {
    pid_t pid = h->c.pid;
    assert_int_equal((int)json_num(j, "pid"), pid);
    assert_string_equal(json_str(j, "allocator"), "glibc");
    /* the heaps the helper's own blocks live in, no more, no fewer */
    assert_int_equal((int)json_num(j, "glibc_arenas.count"), h->nheaps);
    assert_int_equal((uint64_t)json_num(j, "glibc_arenas.reserved_bytes"), (uint64_t)h->nheaps << 26);
    const struct jval *heaps = json_at(j, "glibc_arenas.heaps");
    assert_non_null(heaps);
    assert_int_equal(heaps->n, h->nheaps);
    uint64_t total = 0;
    for (int i = 0; i < h->nheaps; i++) {
        const struct jval *found = NULL;
        for (size_t k = 0; k < heaps->n && !found; k++) {
            unsigned long long a = strtoull(json_str(&heaps->items[k], "start"), NULL, 16);
            if (a == h->heaps[i]) found = &heaps->items[k];
        }
        if (!found)
            fail_msg("heap 0x%llx of thread %d not reported", (unsigned long long)h->heaps[i],
                     h->thread_of[i]);
        /* resident as this test reads smaps itself (the helper is idle) */
        uint64_t rss = (uint64_t)json_num(found, "rss_bytes");
        uint64_t own = smaps_rss_in(pid, h->heaps[i], h->heaps[i] + ((uint64_t)64 << 20));
        if (rss != own)
            fail_msg("heap 0x%llx: ebb-inspect says %llu resident, smaps %llu",
                     (unsigned long long)h->heaps[i], (unsigned long long)rss, (unsigned long long)own);
        total += rss;
    }
    assert_int_equal((uint64_t)json_num(j, "glibc_arenas.rss_bytes"), total);
    assert_true(json_at(j, "glibc_arenas.verified")->b == verified);
    /* the whole process: the categories add up to the resident total of smaps */
    uint64_t all = smaps_rss_in(pid, 0, UINT64_MAX);
    assert_int_equal((uint64_t)json_num(j, "rss_bytes"), all);
    const struct jval *cats = json_at(j, "categories");
    uint64_t sum = 0;
    for (size_t k = 0; k < cats->n; k++) sum += (uint64_t)json_num(&cats->items[k], "rss_bytes");
    assert_int_equal(sum, all);
}

static void test_arenas(void **state) {
    (void)state;
    struct hog h;
    /* 6 threads with 4 MiB each, the first with 100 MiB: 6 arenas, 7 heaps */
    hog_start(&h, "6", "4", "100", false);
    assert_true(h.nheaps >= 7);
    struct jval *j = inspect_json(h.c.pid, false, 0, NULL);
    check_hog(&h, j, true);
    assert_int_equal((int)json_num(j, "glibc_arenas.arenas"), 6);
    const struct jval *heaps = json_at(j, "glibc_arenas.heaps");
    for (size_t k = 0; k < heaps->n; k++) assert_true(json_num(&heaps->items[k], "rss_bytes") >= 4 * MiB);
    /* biggest first, and the arena hint */
    const char *first = json_str(j, "categories.0.name");
    assert_string_equal(first, "glibc_arenas");
    const struct jval *hints = json_at(j, "hints");
    bool hinted = false;
    for (size_t k = 0; k < hints->n; k++) hinted |= strstr(hints->items[k].str, "MALLOC_ARENA_MAX") != NULL;
    assert_true(hinted);
    json_free(j);

    /* the same by layout alone */
    j = inspect_json(h.c.pid, false, 0, "--no-memory-read");
    check_hog(&h, j, false);
    json_free(j);

    /* the readable summary */
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)h.c.pid);
    assert_int_equal(inspect_cli(&out, &err, false, p, NULL), 0);
    assert_non_null(strstr(out, "glibc per-thread arenas"));
    assert_non_null(strstr(out, "in 6 arenas (heap headers read and checked)"));
    assert_non_null(strstr(out, "MALLOC_ARENA_MAX"));
    free(out);
    free(err);
    child_stop(&h.c);
}

/* A process whose heaps the kernel merged with their neighbours (merged-heaps, laid out
 * and headed as glibc does): ebb-inspect, reading the heap headers or by the layout alone,
 * and ebb-bench's count of the same maps (the one its runner takes of every sample) find
 * the same six heaps, by the one rule of lib/procfs/heaps.c. */
static void test_merged_heaps_agree(void **state) {
    (void)state;
    char *argv[] = {(char *)need("MERGED_HEAPS"), NULL};
    struct child c;
    assert_int_equal(child_start(&c, argv, NULL, false), 0);
    if (!child_wait_line(&c, "ready", 30)) fail_msg("merged-heaps did not get ready");
    unsigned long long want[8];
    int n = 0;
    for (char *l = c.buf; l && *l && n < 8; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (sscanf(l, "heap 0x%llx", &want[n]) == 1) n++;
    assert_int_equal(n, 6);

    char path[64], *maps = NULL;
    size_t cap = 0;
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)c.pid);
    assert_int_equal(procfs_read(path, &maps, &cap, NULL), 0);
    int bench = procfs_count_heaps(maps);
    free(maps);
    assert_int_equal(bench, n);

    const char *modes[] = {NULL, "--no-memory-read"};
    for (int m = 0; m < 2; m++) {
        struct jval *j = inspect_json(c.pid, false, 0, modes[m]);
        assert_int_equal((int)json_num(j, "glibc_arenas.count"), bench);
        assert_true(json_at(j, "glibc_arenas.verified")->b == (m == 0));
        if (m == 0) assert_int_equal((int)json_num(j, "glibc_arenas.arenas"), 4);
        const struct jval *heaps = json_at(j, "glibc_arenas.heaps");
        assert_int_equal(heaps->n, (size_t)n);
        for (int i = 0; i < n; i++)
            assert_true(strtoull(json_str(&heaps->items[i], "start"), NULL, 16) == want[i]);
        json_free(j);
    }
    child_stop(&c);
}

/* Root reads another user's process completely. */
static void test_other_user(void **state) {
    (void)state;
    if (geteuid() != 0) skip();
    struct hog h;
    hog_start(&h, "3", "2", "2", true);
    struct jval *j = inspect_json(h.c.pid, false, 0, NULL);
    assert_int_equal((int)json_num(j, "uid"), 65534);
    check_hog(&h, j, true);
    assert_int_equal(json_at(j, "unreadable")->n == 0 || json_at(j, "complete")->b, 1);
    json_free(j);
    child_stop(&h.c);
}

/* Another user cannot read root's mappings: totals only, a clear list, exit 2. */
static void test_unreadable(void **state) {
    (void)state;
    if (geteuid() != 0) skip();
    struct hog h;
    hog_start(&h, "2", "2", "2", false);
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)h.c.pid);
    assert_int_equal(inspect_cli(&out, &err, true, p, NULL), 2);
    assert_non_null(strstr(out, "could not read:"));
    assert_non_null(strstr(out, "/smaps: permission denied"));
    assert_non_null(strstr(err, "incomplete"));
    free(out);
    free(err);
    struct jval *j = inspect_json(h.c.pid, true, 2, NULL);
    assert_false(json_at(j, "complete")->b);
    assert_true(json_num(j, "rss_bytes") > 0); /* from /proc/PID/status */
    assert_true(json_at(j, "unreadable")->n >= 1);
    json_free(j);
    child_stop(&h.c);
}

static void test_no_such_pid(void **state) {
    (void)state;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)pid);
    assert_int_equal(inspect_cli(&out, &err, false, p, NULL), 1);
    assert_non_null(strstr(err, "no process with pid"));
    free(out);
    free(err);
    assert_int_equal(inspect_cli(&out, &err, false, "notapid", NULL), 1);
    assert_non_null(strstr(err, "not a pid"));
    free(out);
    free(err);
}

static void test_exited(void **state) {
    (void)state;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    /* wait until it is a zombie, without reaping it */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)pid);
    assert_int_equal(inspect_cli(&out, &err, false, p, NULL), 1);
    assert_non_null(strstr(err, "exited"));
    free(out);
    free(err);
    waitpid(pid, NULL, 0);
}

static void test_watch(void **state) {
    (void)state;
    struct hog h;
    hog_start(&h, "2", "1", "1", false);
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)h.c.pid);
    assert_int_equal(inspect_cli(&out, &err, false, "--json", "--watch", "0.1", "--count", "3", p, NULL), 0);
    int lines = 0;
    for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n"), lines++) {
        struct jval *j = json_parse(l);
        assert_non_null(j);
        if (lines == 0) assert_null(json_at(j, "growth"));
        else
            assert_true(json_at(j, "growth.rss_bytes") && json_at(j, "growth.glibc_arenas") &&
                        json_at(j, "elapsed_s"));
        json_free(j);
    }
    assert_int_equal(lines, 3);
    free(out);
    free(err);
    assert_int_equal(inspect_cli(&out, &err, false, "--watch", "0.1", "--count", "2", p, NULL), 0);
    assert_non_null(strstr(out, "since the first sample"));
    free(out);
    free(err);

    /* a process that keeps allocating from glibc's main heap: the growth shows there */
    struct child g;
    char *gargv[] = {(char *)need("ARENA_HOG"), "1", "1", "1", "20", NULL};
    assert_int_equal(child_start(&g, gargv, NULL, false), 0);
    assert_true(child_wait_line(&g, "ready", 30));
    char gp[16];
    snprintf(gp, sizeof(gp), "%d", (int)g.pid);
    /* watched until the growth since the first sample shows (20 MiB/s: about half a
     * second on an idle machine), however slowly a loaded one lets it allocate */
    char *wargv[] = {(char *)need("EBB_INSPECT"), "--json", "--watch", "0.5", gp, NULL};
    struct child gw;
    assert_int_equal(child_start(&gw, wargv, NULL, false), 0);
    static char line[65536];
    double heap = 0, rss = 0;
    for (double end = test_now() + 60; (heap < 8 * MiB || rss < 8 * MiB) && test_now() < end;) {
        if (!child_next_line(&gw, line, sizeof(line), end - test_now())) break;
        struct jval *j = json_parse(line);
        assert_non_null(j);
        if (json_at(j, "growth")) {
            heap = json_num(j, "growth.glibc_main_heap");
            rss = json_num(j, "growth.rss_bytes");
        }
        json_free(j);
    }
    child_stop(&gw);
    if (heap < 8 * MiB) fail_msg("main heap grew by %.0f bytes only", heap);
    assert_true(rss >= 8 * MiB);
    child_stop(&g);
    /* the process ends while watched */
    struct child c = h.c;
    char *argv[] = {(char *)need("EBB_INSPECT"), "--watch", "0.1", p, NULL};
    struct child w;
    assert_int_equal(child_start(&w, argv, NULL, false), 0);
    assert_true(child_wait_line(&w, "  total", 30));
    child_stop(&c);
    int st;
    waitpid(w.pid, &st, 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    close(w.out);
}

/* ---- JVM ---- */

static void test_jvm(void **state) {
    (void)state;
    const char *java = test_env("JAVA");
    if (!java)
        fail_msg("java not found at configure time: the JVM case needs it (bash .ci/deps installs it)");
    char *argv[] = {(char *)java, "-Xmx64m", "-cp", (char *)need("JAVA_CLASSPATH"), "Sleeper", NULL};
    struct child c;
    assert_int_equal(child_start(&c, argv, NULL, false), 0);
    if (!child_wait_line(&c, "ready", 120)) fail_msg("the JVM did not get ready");
    struct jval *j = inspect_json(c.pid, false, 0, NULL);
    assert_true(json_at(j, "jvm")->b);
    assert_int_equal((uint64_t)json_num(j, "java.max_heap_bytes"), 64 << 20);
    assert_true(json_at(j, "java.heap.confirmed")->b);
    assert_int_equal((uint64_t)json_num(j, "java.heap.reserved_bytes"), 64 << 20);
    assert_true(json_num(j, "java.heap.rss_bytes") >= 16 * MiB); /* 16 arrays of 1 MiB */
    assert_non_null(json_at(j, "java.code_cache.start"));
    assert_non_null(json_at(j, "java.class_space.start"));
    /* the JVM's threads get glibc arenas too */
    assert_true(json_num(j, "glibc_arenas.count") >= 1);
    /* a JVM is never idle (JIT, GC): the two readings agree within 10% */
    double all = (double)smaps_rss_in(c.pid, 0, UINT64_MAX), rss = json_num(j, "rss_bytes");
    assert_true(rss > all * 0.9 && rss < all * 1.1);
    json_free(j);

    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)c.pid);
    assert_int_equal(inspect_cli(&out, &err, false, p, NULL), 0);
    assert_non_null(strstr(out, "JVM (libjvm.so mapped)"));
    assert_non_null(strstr(out, "Java heap"));
    assert_non_null(strstr(out, "maximum heap size from command line"));
    free(out);
    free(err);
    child_stop(&c);
}

/* ---- ebbmalloc stats page ---- */

static struct jval *fake_page(const char *mode, struct child *c) {
    char *argv[] = {(char *)need("FAKE_STATS_PAGE"), (char *)mode, NULL};
    assert_int_equal(child_start(c, argv, NULL, false), 0);
    if (!child_wait_line(c, "ready", 30)) fail_msg("fake-stats-page %s did not get ready", mode);
    return inspect_json(c->pid, false, 0, NULL);
}

static void test_stats_page_ok(void **state) {
    (void)state;
    struct child c;
    struct jval *j = fake_page("ok", &c);
    assert_string_equal(json_str(j, "allocator"), "ebbmalloc");
    assert_string_equal(json_str(j, "ebbmalloc.stats_page"), "ok");
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.in_use_bytes"), 3 << 20);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.released_bytes"), 8 << 20);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.threads"), 3);
    assert_true(json_num(j, "ebbmalloc.age_ms") < 60000);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.flow.grown_bytes"), 40 << 20);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.flow.released_timer_bytes"), 4 << 20);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.flow.released_live_bytes"), 2 << 20);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.flow.faulted_bytes"), 30 << 20);
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.flow.refaulted_bytes"), 3 << 20);
    json_free(j);
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)c.pid);
    assert_int_equal(inspect_cli(&out, &err, false, p, NULL), 0);
    assert_non_null(strstr(out, "ebbmalloc (live stats page /dev/shm/ebbmalloc."));
    assert_non_null(strstr(out, "in use          3.00 MiB"));
    /* the flow counters, added up and labelled by rule */
    assert_non_null(strstr(out, "since start: given back 9.00 MiB (idle 4.00 MiB, over the cap 2.00 MiB, "
                                "traded for growth 1.00 MiB, free pages of live spans 2.00 MiB)"));
    assert_non_null(strstr(out, "new heap address space 40.0 MiB, pages of live spans taken back 1.00 MiB, "
                                "and 30.0 MiB handed out from free released spans"));
    assert_non_null(strstr(out, "at least 3.00 MiB less than the release delay before"));
    free(out);
    free(err);
    child_stop(&c);
}

/* An older library's page (version 1, no flow counters) is read, its flow shown as
 * unknown rather than as whatever lies past its end. */
static void test_stats_page_v1(void **state) {
    (void)state;
    struct child c;
    struct jval *j = fake_page("v1", &c);
    assert_string_equal(json_str(j, "ebbmalloc.stats_page"), "ok");
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.in_use_bytes"), 3 << 20);
    const struct jval *flow = json_at(j, "ebbmalloc.flow");
    assert_non_null(flow);
    assert_int_equal(flow->t, J_NULL);
    json_free(j);
    char p[16], *out, *err;
    snprintf(p, sizeof(p), "%d", (int)c.pid);
    assert_int_equal(inspect_cli(&out, &err, false, p, NULL), 0);
    assert_non_null(strstr(out, "in use          3.00 MiB"));
    assert_null(strstr(out, "since start: given back"));
    free(out);
    free(err);
    child_stop(&c);
}

/* A writer that never pauses: every read must still be a consistent snapshot. */
static void test_stats_page_busy(void **state) {
    (void)state;
    struct child c;
    struct jval *j = fake_page("busy", &c);
    assert_string_equal(json_str(j, "ebbmalloc.stats_page"), "ok");
    json_free(j);
    for (int i = 0; i < 50; i++) {
        struct inspection in;
        char err[256];
        assert_int_equal(inspect(&in, c.pid, 0, err, sizeof(err)), 0);
        if (in.stats.state != STATS_OK) fail_msg("read %d refused: %s", i, in.stats.reason);
        const struct ebb_stats *s = &in.stats.page.stats;
        assert_int_equal(s->resident, s->in_use + s->thread_cache + s->central + s->page_free + s->metadata);
        inspection_free(&in);
    }
    child_stop(&c);
}

static void test_stats_page_refused(void **state) {
    (void)state;
    static const struct {
        const char *mode, *why;
    } cases[] = {
        {"stale", "does not map it"}, {"wrongpid", "another pid"},         {"wrongstart", "start_time"},
        {"oddseq", "seq stayed odd"}, {"unwritten", "not written it yet"}, {"badmagic", "magic"},
        {"badsum", "resident !="},    {"foreign", "another user"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct child c;
        struct jval *j = fake_page(cases[i].mode, &c);
        const char *st = json_str(j, "ebbmalloc.stats_page");
        const char *why = json_str(j, "ebbmalloc.detail");
        if (!st || strcmp(st, "refused") || !why || !strstr(why, cases[i].why))
            fail_msg("mode %s: stats page %s (%s), expected refused for '%s'", cases[i].mode,
                     st ? st : "null", why ? why : "", cases[i].why);
        assert_null(json_at(j, "ebbmalloc.in_use_bytes"));
        json_free(j);
        child_stop(&c);
    }
}

/* The name now points at another file: the page the process maps is read, not it. */
static void test_stats_page_replaced(void **state) {
    (void)state;
    if (geteuid() != 0) skip(); /* map_files needs root */
    struct child c;
    struct jval *j = fake_page("replaced", &c);
    assert_string_equal(json_str(j, "ebbmalloc.stats_page"), "ok");
    assert_non_null(strstr(json_str(j, "ebbmalloc.detail"), "map_files"));
    assert_int_equal((uint64_t)json_num(j, "ebbmalloc.in_use_bytes"), 3 << 20);
    json_free(j);
    child_stop(&c);
}

static void test_page_check(void **state) {
    (void)state;
    struct ebb_shm_page pg;
    memset(&pg, 0, sizeof(pg));
    pg.magic = EBB_SHM_MAGIC;
    pg.version = EBB_SHM_VERSION;
    pg.size = sizeof(pg);
    pg.pid = 42;
    pg.start_time = 1000;
    pg.stats.in_use = 10;
    pg.stats.metadata = 5;
    pg.stats.resident = 15;
    pg.stats.released = 1;
    pg.stats.mapped = 16;
    assert_null(shm_page_check(&pg, 42, 1000));
    assert_non_null(shm_page_check(&pg, 43, 1000));
    assert_non_null(shm_page_check(&pg, 42, 1001));
    pg.size--;
    assert_non_null(shm_page_check(&pg, 42, 1000));
    pg.size++;
    pg.version++;
    assert_non_null(shm_page_check(&pg, 42, 1000));
    pg.version--;
    /* version 1: the same page ending before the flow counters */
    pg.version = 1;
    assert_non_null(shm_page_check(&pg, 42, 1000));
    pg.size = offsetof(struct ebb_shm_page, flow);
    assert_null(shm_page_check(&pg, 42, 1000));
    pg.version = EBB_SHM_VERSION;
    assert_non_null(shm_page_check(&pg, 42, 1000));
    pg.size = sizeof(pg);
    pg.stats.mapped++;
    assert_non_null(shm_page_check(&pg, 42, 1000));
}

static void test_parse_size(void **state) {
    (void)state;
    bool ok;
    assert_int_equal(parse_size("64m", &ok), 64 << 20);
    assert_true(ok);
    assert_int_equal(parse_size("2G", &ok), 2ull << 30);
    assert_int_equal(parse_size("1024", &ok), 1024);
    assert_int_equal(parse_size("512KB", &ok), 512 << 10);
    parse_size("12x", &ok);
    assert_false(ok);
    parse_size("", &ok);
    assert_false(ok);
}

/* ---- hints, on made-up inspections ---- */

static bool has_hint(const struct inspection *in, const char *a, const char *b) {
    for (size_t i = 0; i < in->nhints; i++)
        if (strstr(in->hints[i], a) && (!b || strstr(in->hints[i], b))) return true;
    return false;
}

static void test_hints(void **state) {
    (void)state;
    static struct inspection in; /* large: not on the stack */
    memset(&in, 0, sizeof(in));
    in.maps_ok = true;
    in.cg.found = in.cg.have_usage = in.cg.have_stat = true;
    in.cg.limit = 1024ull << 20;
    in.cg.usage = 900ull << 20;
    in.cg.file = 600ull << 20;
    in.cg.anon = 300ull << 20;
    in.cg.inactive_file = 500ull << 20;
    make_hints(&in);
    assert_true(has_hint(&in, "page cache", "not a leak"));
    assert_true(has_hint(&in, "working set", "400 MiB"));
    for (size_t i = 0; i < in.nhints; i++) free(in.hints[i]);

    memset(&in, 0, sizeof(in));
    in.maps_ok = true;
    in.cg.found = in.cg.have_usage = in.cg.have_stat = true;
    in.cg.limit = 1024ull << 20;
    in.cg.usage = 1000ull << 20;
    in.cg.anon = 900ull << 20;
    in.nheaps = 5;
    in.cat[CAT_ARENAS].rss = 300ull << 20;
    in.cat[CAT_ARENAS].size = 320ull << 20;
    in.cat[CAT_MAIN_HEAP].rss = 10ull << 20;
    char *env[] = {"MALLOC_ARENA_MAX=4", NULL};
    in.proc.environ = env;
    make_hints(&in);
    assert_true(has_hint(&in, "OOM killer", NULL));
    assert_false(has_hint(&in, "not a leak", NULL));
    assert_true(has_hint(&in, "5 glibc arena heaps hold 300 MiB", "already set to 4"));
    for (size_t i = 0; i < in.nhints; i++) free(in.hints[i]);

    /* well below the limit, few arenas: nothing to say */
    memset(&in, 0, sizeof(in));
    in.maps_ok = true;
    in.cg.found = in.cg.have_usage = true;
    in.cg.limit = 1024ull << 20;
    in.cg.usage = 100ull << 20;
    in.nheaps = 1;
    in.cat[CAT_ARENAS].rss = 30ull << 20;
    make_hints(&in);
    assert_int_equal(in.nhints, 0);
}

/* ---- the real library ---- */

static void test_real_ebbmalloc(void **state) {
    (void)state;
    const char *lib = need("EBB_TEST_LIB");
    char pre[4200];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", lib);
    char *env[] = {pre, "EBB_STATS_SHM=1", NULL};
    /* keeps allocating (10 MiB/s); the library publishes from its release thread, which
     * starts at the program's first pthread_create and rewrites the page every 250 ms */
    char *argv[] = {(char *)need("ARENA_HOG"), "4", "8", "8", "10", NULL};
    struct child c;
    assert_int_equal(child_start(&c, argv, env, false), 0);
    if (!child_wait_line(&c, "ready", 60)) fail_msg("arena-hog under ebbmalloc did not get ready");
    assert_true(maps_has(c.pid, "libebbmalloc"));
    /* poll until the page is there and shows what the threads touched (the first one
     * may have been written before they allocated) */
    struct jval *j = NULL;
    const char *st = NULL;
    for (double end = test_now() + 30;;) {
        json_free(j);
        j = inspect_json(c.pid, false, 0, NULL);
        st = json_str(j, "ebbmalloc.stats_page");
        if ((st && strcmp(st, "absent") &&
             (strcmp(st, "ok") || json_num(j, "ebbmalloc.in_use_bytes") >= 32 * MiB)) ||
            test_now() > end)
            break;
        usleep(100000);
    }
    assert_string_equal(json_str(j, "allocator"), "ebbmalloc");
    /* no glibc arenas: ebbmalloc replaced malloc */
    assert_int_equal((int)json_num(j, "glibc_arenas.count"), 0);
    assert_non_null(st);
    if (strcmp(st, "ok"))
        fail_msg("stats page of a real ebbmalloc process: %s (%s)", st, json_str(j, "ebbmalloc.detail"));
    /* 4 threads touched 8 MiB each */
    assert_true(json_num(j, "ebbmalloc.in_use_bytes") >= 32 * MiB);
    assert_true(json_num(j, "ebbmalloc.resident_bytes") >= json_num(j, "ebbmalloc.in_use_bytes"));
    json_free(j);
    child_stop(&c);
}

/* ---- cgroup ---- */

static void test_cgroup(void **state) {
    (void)state;
    struct inspection in;
    char err[256];
    assert_int_equal(inspect(&in, getpid(), 0, err, sizeof(err)), 0);
    bool listed = false;
    for (size_t i = 0; i < in.nunread; i++) listed |= strstr(in.unread[i].what, "cgroup") != NULL;
    /* either read, or said clearly that it could not be */
    assert_true(in.cg.found || listed);
    if (in.cg.found && in.cg.have_usage && in.cg.have_stat) assert_true(in.cg.usage >= in.cg.anon);
    inspection_free(&in);
}

/* A cgroup of our own with an 80 MiB limit, filled mostly with page cache: the
 * limit is read and the hint says it is cache, not a leak.  Skipped where no
 * memory cgroup can be made (not root, no writable hierarchy). */
static bool write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static bool make_cgroup(char *dir, size_t len, int *version) {
    /* a child of our own memory cgroup, in the hierarchy mounted the usual way */
    static struct procfs_cgroup cg;
    procfs_cgroup_read("/proc/self", true, &cg);
    if (!cg.found) return false;
    *version = cg.version;
    snprintf(dir, len, "/sys/fs/cgroup%s%s/ebb-inspect-test-%d", cg.version == 1 ? "/memory" : "",
             strcmp(cg.path, "/") ? cg.path : "", (int)getpid());
    if (mkdir(dir, 0755) < 0) return false;
    char limit[800];
    snprintf(limit, sizeof(limit), "%s/%s", dir, *version == 1 ? "memory.limit_in_bytes" : "memory.max");
    if (!write_file(limit, "83886080")) {
        rmdir(dir);
        return false;
    }
    return true;
}

static void test_cgroup_limit(void **state) {
    (void)state;
    char dir[700];
    int version;
    if (geteuid() != 0 || !make_cgroup(dir, sizeof(dir), &version)) {
        print_message("cannot make a memory cgroup here: cgroup limit test skipped\n");
        skip();
    }
    /* 72 MiB of file data, not in the page cache yet */
    char file[] = "/var/tmp/ebb-inspect-cache-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    static char block[1 << 20];
    memset(block, 'e', sizeof(block));
    for (int i = 0; i < 72; i++) assert_int_equal(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
    fsync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);

    /* a process in the cgroup that reads the file (page cache charged there) and waits */
    char script[2048];
    snprintf(script, sizeof(script),
             "echo $$ > %s/cgroup.procs && cat %s > /dev/null && echo ready && exec sleep 60", dir, file);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    struct child c;
    assert_int_equal(child_start(&c, argv, NULL, false), 0);
    bool ready = child_wait_line(&c, "ready", 30);
    struct jval *j = ready ? inspect_json(c.pid, false, 0, NULL) : NULL;
    child_stop(&c);
    unlink(file);
    /* the directory goes once the kernel has let go of the exited reader */
    for (double end = test_now() + 30; rmdir(dir) < 0 && test_now() < end;) usleep(20000);
    if (!ready) fail_msg("the reader in the cgroup did not get ready");
    assert_int_equal((int)json_num(j, "cgroup.version"), version);
    assert_non_null(strstr(json_str(j, "cgroup.path"), "ebb-inspect-test-"));
    assert_int_equal((uint64_t)json_num(j, "cgroup.limit_bytes"), 80 << 20);
    assert_true(json_num(j, "cgroup.file_bytes") >= 48 * MiB);
    const struct jval *hints = json_at(j, "hints");
    bool cache = false;
    for (size_t k = 0; k < hints->n; k++) cache |= strstr(hints->items[k].str, "not a leak") != NULL;
    if (!cache)
        fail_msg("no page-cache hint: usage %.0f, file %.0f", json_num(j, "cgroup.usage_bytes"),
                 json_num(j, "cgroup.file_bytes"));
    json_free(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_parse_size, children_teardown),
        cmocka_unit_test_teardown(test_page_check, children_teardown),
        cmocka_unit_test_teardown(test_hints, children_teardown),
        cmocka_unit_test_teardown(test_arenas, children_teardown),
        cmocka_unit_test_teardown(test_merged_heaps_agree, children_teardown),
        cmocka_unit_test_teardown(test_other_user, children_teardown),
        cmocka_unit_test_teardown(test_unreadable, children_teardown),
        cmocka_unit_test_teardown(test_no_such_pid, children_teardown),
        cmocka_unit_test_teardown(test_exited, children_teardown),
        cmocka_unit_test_teardown(test_watch, children_teardown),
        cmocka_unit_test_teardown(test_stats_page_ok, children_teardown),
        cmocka_unit_test_teardown(test_stats_page_v1, children_teardown),
        cmocka_unit_test_teardown(test_stats_page_busy, children_teardown),
        cmocka_unit_test_teardown(test_stats_page_refused, children_teardown),
        cmocka_unit_test_teardown(test_stats_page_replaced, children_teardown),
        cmocka_unit_test_teardown(test_cgroup, children_teardown),
        cmocka_unit_test_teardown(test_cgroup_limit, children_teardown),
        cmocka_unit_test_teardown(test_jvm, children_teardown),
        cmocka_unit_test_teardown(test_real_ebbmalloc, children_teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
