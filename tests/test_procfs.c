/* The procfs library (lib/procfs) on sample /proc texts (tests/data/procfs): whole-file
 * reads, fields, stat, environ, maps lines and smaps, mapped files and libraries, and
 * glibc's arena heaps as ebb-bench (maps alone) and ebb-inspect (smaps, and the heap
 * headers) count them.  The cgroup rules and reader: test_cgroup.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "procfs.h"

#define MiB ((uint64_t)1 << 20)

/* A sample file, malloc'd and NUL-terminated. */
static char *sample(const char *name, size_t *len) {
    char path[512], *buf = NULL;
    size_t cap = 0;
    snprintf(path, sizeof(path), "%s/%s", PROCFS_DATA, name);
    int r = procfs_read(path, &buf, &cap, len);
    if (r < 0) fail_msg("cannot read %s: %s", path, strerror(-r));
    return buf;
}

/* ------------------------------------------------------------ reading files */

static void test_read_whole_and_bounded(void **state) {
    (void)state;
    char path[] = "/tmp/ebb-procfs-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    /* larger than the first buffer, so the reader grows it */
    static char big[100000];
    for (size_t i = 0; i < sizeof(big); i++) big[i] = (char)('a' + i % 26);
    assert_int_equal(write(fd, big, sizeof(big)), (ssize_t)sizeof(big));
    close(fd);
    char *buf = NULL;
    size_t cap = 0, len = 0;
    assert_int_equal(procfs_read(path, &buf, &cap, &len), 0);
    assert_int_equal(len, sizeof(big));
    assert_memory_equal(buf, big, sizeof(big));
    assert_int_equal(buf[len], '\0');
    /* the buffer is reused */
    assert_int_equal(procfs_read_at(AT_FDCWD, path, &buf, &cap, NULL), 0);
    free(buf);
    char small[16];
    assert_int_equal(procfs_read_buf(path, small, sizeof(small)), 15);
    assert_string_equal(small, "abcdefghijklmno");
    unlink(path);
    buf = NULL;
    cap = 0;
    assert_int_equal(procfs_read(path, &buf, &cap, &len), -ENOENT);
    free(buf);
    assert_int_equal(procfs_read_buf(path, small, sizeof(small)), 0);
    assert_string_equal(small, "");
    /* a real /proc file, which says it has no size */
    assert_true(procfs_status_kib(0, "VmRSS") > 0);
    assert_true(procfs_status_kib(getpid(), "VmRSS") > 0);
    assert_int_equal(procfs_status_kib(0, "NoSuchField"), -1);
}

/* ------------------------------------------------------------ fields */

static void test_status_fields(void **state) {
    (void)state;
    char *status_text = sample("status", NULL);
    assert_int_equal(procfs_field_kib(status_text, "VmRSS"), 412376);
    assert_int_equal(procfs_field_kib(status_text, "RssAnon"), 409800);
    assert_int_equal(procfs_field_kib(status_text, "VmHWM"), 587012);
    /* A prefix of another field's name is not that field. */
    assert_int_equal(procfs_field_kib(status_text, "Vm"), -1);
    assert_int_equal(procfs_field_kib(status_text, "RssHuge"), -1);
    /* The first line counts, a field is found only at the start of a line. */
    const char *name = procfs_field(status_text, "Name", ':');
    assert_non_null(name);
    assert_memory_equal(name, "ebb-wl-arena-cr\n", 16);
    assert_null(procfs_field(status_text, "Pid:", ':'));
    assert_null(procfs_field("xPid:\t1\n", "Pid", ':'));
    uint64_t v;
    assert_true(procfs_field_u64(status_text, "Threads", ':', &v) && v == 17);
    assert_true(procfs_field_u64(status_text, "NSpid", ':', &v) && v == 4242);
    assert_false(procfs_field_u64(status_text, "State", ':', &v)); /* not a number */
    /* memory.stat's "key value" lines: a key is not a prefix of a longer one */
    const char *st = "anon_thp 10\nanon 20\nfile 30\n";
    assert_true(procfs_field_u64(st, "anon", ' ', &v) && v == 20);
    assert_true(procfs_field_u64(st, "anon_thp", ' ', &v) && v == 10);
    assert_false(procfs_field_u64(st, "kernel", ' ', &v));
    /* A zombie's status has no VmRSS. */
    assert_int_equal(procfs_field_kib("Name:\tx\nState:\tZ (zombie)\n", "VmRSS"), -1);
    assert_int_equal(procfs_field_kib("", "VmRSS"), -1);
    free(status_text);
}

static void test_smaps_rollup(void **state) {
    (void)state;
    char *rollup_text = sample("smaps_rollup", NULL);
    struct procfs_rollup r;
    assert_int_equal(procfs_parse_smaps_rollup(rollup_text, &r), 0);
    assert_int_equal(r.rss_kib, 412504);
    assert_int_equal(r.pss_kib, 411230); /* not Pss_Dirty or Pss_Anon */
    assert_int_equal(r.anon_kib, 409800);
    assert_int_equal(r.anon_huge_kib, 30720);
    assert_int_equal(r.swap_kib, 0); /* not SwapPss */
    assert_int_equal(procfs_parse_smaps_rollup("garbage\n", &r), -1);
    free(rollup_text);
}

static void test_stat(void **state) {
    (void)state;
    char *text = sample("stat", NULL);
    struct procfs_stat st;
    assert_int_equal(procfs_parse_stat(text, &st), 0);
    assert_string_equal(st.comm, "my (odd) prog");
    assert_int_equal(st.state, 'S');
    assert_true(st.utime == 12 && st.stime == 3);
    assert_true(st.start_time == 8123456);
    assert_int_equal(procfs_parse_stat("4242 (x) S 1 2", &st), -1); /* cut short */
    assert_int_equal(procfs_parse_stat("no parentheses", &st), -1);
    free(text);
}

static void test_environ(void **state) {
    (void)state;
    size_t len;
    char *env = sample("environ", &len);
    assert_true(procfs_environ_has(env, len, "MALLOC_ARENA_MAX=2"));
    assert_false(procfs_environ_has(env, len, "MALLOC_ARENA_MAX=1"));
    assert_false(procfs_environ_has(env, len, "MALLOC_ARENA_MAX=20"));
    assert_false(procfs_environ_has(env, len, "MALLOC_ARENA_MAX"));
    assert_true(procfs_environ_has(env, len, "PATH=/usr/bin"));
    assert_false(procfs_environ_has(env, 0, "HOME=/root"));
    free(env);
}

/* ------------------------------------------------------------ maps lines */

static void test_maps_line(void **state) {
    (void)state;
    struct procfs_map e;
    const char *l1 = "7f2a47600000-7f2a47628000 r--p 00000000 fe:01 2228321                    "
                     "/usr/lib/x86_64-linux-gnu/libc.so.6";
    assert_int_equal(procfs_maps_line(l1, strlen(l1), &e), 0);
    assert_true(e.start == 0x7f2a47600000ull);
    assert_true(e.end == 0x7f2a47628000ull);
    assert_string_equal(e.perms, "r--p");
    assert_int_equal(e.dev_major, 0xfe);
    assert_int_equal(e.dev_minor, 1);
    assert_true(e.inode == 2228321);
    assert_int_equal(e.path_len, strlen("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert_memory_equal(e.path, "/usr/lib/x86_64-linux-gnu/libc.so.6", e.path_len);
    assert_false(e.deleted);

    const char *l2 = "7f2a38000000-7f2a3a1e4000 rw-p 00000000 00:00 0 ";
    assert_int_equal(procfs_maps_line(l2, strlen(l2), &e), 0);
    assert_int_equal(e.path_len, 0);
    assert_true(e.inode == 0);
    assert_true(e.end - e.start == 0x21e4000ull);

    const char *l3 = "7f0000001000-7f0000002000 r-xp 00001000 08:02 77 /tmp/lib with space.so (deleted)";
    assert_int_equal(procfs_maps_line(l3, strlen(l3), &e), 0);
    assert_int_equal(e.path_len, strlen("/tmp/lib with space.so"));
    assert_true(e.deleted);
    assert_true(e.offset == 0x1000);
    assert_int_equal(e.dev_major, 8);
    assert_int_equal(e.dev_minor, 2);

    const char *l4 = "55f1c8e4b000-55f1c8e6c000 rw-p 00000000 00:00 0                          [heap]";
    assert_int_equal(procfs_maps_line(l4, strlen(l4), &e), 0);
    assert_int_equal(e.path_len, strlen("[heap]"));

    const char *bad[] = {"", "zzzz-1000 rw-p 0 00:00 0", "1000-2000 rw-p", "2000-1000 rw-p 0 00:00 0",
                         "1000 2000 rw-p 0 00:00 0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(procfs_maps_line(bad[i], strlen(bad[i]), &e), -1);
}

/* ------------------------------------------------------------ smaps */

static void test_smaps_parse(void **state) {
    (void)state;
    char *text = sample("smaps-merged-heaps", NULL);
    struct procfs_vmas m = {0};
    assert_int_equal(procfs_vmas_parse(&m, text, true), 0);
    assert_int_equal(m.n, 15);
    assert_true(m.have_smaps);
    assert_string_equal(m.v[0].path, "/usr/bin/app");
    assert_string_equal(m.v[1].path, "[heap]");
    const struct procfs_vma *a = &m.v[2];
    assert_true(a->start == 0x7f0000000000ull && a->end == 0x7f0004021000ull);
    assert_string_equal(a->path, "");
    assert_true(procfs_vma_anon(a) && procfs_vma_is(a, "rw-p"));
    assert_true(a->rss == 65668 * 1024ull && a->anon == 65668 * 1024ull);
    assert_true(a->nr && !a->nh);
    assert_true(m.v[6].anon_huge == 2 * MiB);
    const struct procfs_vma *stack = &m.v[9];
    assert_true(stack->nh && !stack->nr);
    assert_true(stack->swap == 12 * 1024);
    assert_string_equal(m.v[11].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
    assert_false(procfs_vma_anon(&m.v[11]));
    const struct procfs_vma *shm = &m.v[13];
    assert_string_equal(shm->path, "/dev/zero"); /* " (deleted)" said apart */
    assert_true(shm->deleted);
    assert_string_equal(m.v[14].path, "[stack]");
    procfs_vmas_free(&m);
    free(text);

    /* maps alone: no sizes */
    text = sample("maps-three-heaps", NULL);
    struct procfs_vmas mm = {0};
    assert_int_equal(procfs_vmas_parse(&mm, text, false), 0);
    assert_int_equal(mm.n, 13);
    assert_false(mm.have_smaps);
    assert_true(mm.v[0].rss == 0);
    procfs_vmas_free(&mm);
    free(text);

    /* a line that starts like a mapping and is not one */
    char broken[] = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n7f00zz\n";
    struct procfs_vmas b = {0};
    errno = 0;
    assert_int_equal(procfs_vmas_parse(&b, broken, false), -1);
    assert_int_equal(errno, EINVAL);
    procfs_vmas_free(&b);
}

/* ------------------------------------------------------------ files in maps */

static void test_maps_files(void **state) {
    (void)state;
    char *maps_three_heaps = sample("maps-three-heaps", NULL);
    assert_true(procfs_maps_has_file(maps_three_heaps, "/usr/lib/x86_64-linux-gnu/libc.so.6", 0, 0, 0));
    assert_false(procfs_maps_has_file(maps_three_heaps, "/usr/lib/x86_64-linux-gnu/libc.so", 0, 0, 0));
    /* By device and inode when the path differs (a symlink, an overlay). */
    assert_true(procfs_maps_has_file(maps_three_heaps, "/other/name.so", 0xfe, 1, 2228321));
    assert_false(procfs_maps_has_file(maps_three_heaps, "/other/name.so", 0xfe, 2, 2228321));
    assert_true(procfs_maps_has_file(maps_three_heaps, NULL, 0xfe, 1, 2228321));

    static const char *const allocs[] = {"libjemalloc", "libtcmalloc", NULL};
    char found[256];
    assert_false(procfs_maps_find_lib(maps_three_heaps, allocs, found, sizeof found));
    const char *with_je = "7f0000000000-7f0000001000 r--p 00000000 fe:01 5 "
                          "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n";
    assert_true(procfs_maps_find_lib(with_je, allocs, found, sizeof found));
    assert_string_equal(found, "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
    /* the base name counts, not a directory */
    const char *in_dir = "7f0000000000-7f0000001000 r--p 00000000 fe:01 5 /opt/libjemalloc/lib/libx.so\n";
    assert_false(procfs_maps_find_lib(in_dir, allocs, NULL, 0));
    assert_true(procfs_lib_named("/usr/lib/libc.so.6", 18, "libc.so"));
    assert_false(procfs_lib_named("/usr/lib/libcrypt.so.1", 22, "libc."));
    free(maps_three_heaps);
}

/* ------------------------------------------------------------ 64 MiB heaps */

static void test_heaps_typical(void **state) {
    (void)state;
    char *maps_three_heaps = sample("maps-three-heaps", NULL);
    assert_int_equal(procfs_count_heaps(maps_three_heaps), 3);
    free(maps_three_heaps);
}

static void test_heaps_merged_neighbours(void **state) {
    (void)state;
    /* A full heap followed directly by the next heap: the kernel merged both rw
     * parts into one mapping of 64 MiB + 0x21000. */
    const char *m = "7f2a38000000-7f2a3c021000 rw-p 00000000 00:00 0 \n"
                    "7f2a3c021000-7f2a40000000 ---p 00000000 00:00 0 \n";
    assert_int_equal(procfs_count_heaps(m), 2);
    /* Two full heaps back to back: one 128 MiB rw mapping ending at a boundary. */
    const char *m2 = "7f2a38000000-7f2a40000000 rw-p 00000000 00:00 0 \n"
                     "7f2a40000000-7f2a40001000 r--p 00000000 fe:01 12 /usr/lib/x.so\n";
    assert_int_equal(procfs_count_heaps(m2), 2);
    /* Some other anonymous mapping merged into the start of a heap. */
    const char *m3 = "7f2a37f00000-7f2a38400000 rw-p 00000000 00:00 0 \n"
                     "7f2a38400000-7f2a3c000000 ---p 00000000 00:00 0 \n";
    assert_int_equal(procfs_count_heaps(m3), 1);
    /* A heap whose ---p tail merged with a thread stack's guard page. */
    const char *m4 = "7f2a38000000-7f2a38800000 rw-p 00000000 00:00 0 \n"
                     "7f2a38800000-7f2a3c001000 ---p 00000000 00:00 0 \n"
                     "7f2a3c001000-7f2a3c801000 rw-p 00000000 00:00 0 \n";
    assert_int_equal(procfs_count_heaps(m4), 1);
}

static void test_heaps_not_heaps(void **state) {
    (void)state;
    /* Not 64 MiB aligned. */
    assert_int_equal(procfs_count_heaps("7f2a38100000-7f2a38200000 rw-p 00000000 00:00 0 \n"
                                        "7f2a38200000-7f2a3c100000 ---p 00000000 00:00 0 \n"),
                     0);
    /* Aligned but only 32 MiB in all. */
    assert_int_equal(procfs_count_heaps("7f2a38000000-7f2a39000000 rw-p 00000000 00:00 0 \n"
                                        "7f2a39000000-7f2a3a000000 ---p 00000000 00:00 0 \n"),
                     0);
    /* A 64 MiB file mapping. */
    assert_int_equal(procfs_count_heaps("7f2a38000000-7f2a3c000000 r--p 00000000 fe:01 99 /var/data.bin\n"),
                     0);
    /* A thread stack: guard first, then rw. */
    assert_int_equal(procfs_count_heaps("7f2a38000000-7f2a38001000 ---p 00000000 00:00 0 \n"
                                        "7f2a38001000-7f2a3c000000 rw-p 00000000 00:00 0 \n"),
                     0);
    /* A 1 GiB reservation with a committed start (a JVM heap or class space). */
    assert_int_equal(procfs_count_heaps("7f2a00000000-7f2a02000000 rw-p 00000000 00:00 0 \n"
                                        "7f2a02000000-7f2a40000000 ---p 00000000 00:00 0 \n"),
                     0);
    /* rw, ---p, rw inside one window. */
    assert_int_equal(procfs_count_heaps("7f2a38000000-7f2a39000000 rw-p 00000000 00:00 0 \n"
                                        "7f2a39000000-7f2a3a000000 ---p 00000000 00:00 0 \n"
                                        "7f2a3a000000-7f2a3c000000 rw-p 00000000 00:00 0 \n"),
                     0);
    /* A hole in the middle. */
    assert_int_equal(procfs_count_heaps("7f2a38000000-7f2a39000000 rw-p 00000000 00:00 0 \n"
                                        "7f2a39100000-7f2a3c000000 ---p 00000000 00:00 0 \n"),
                     0);
    /* Shared anonymous memory is not malloc's. */
    assert_int_equal(
        procfs_count_heaps("7f2a38000000-7f2a3c000000 rw-s 00000000 00:01 5 /dev/zero (deleted)\n"), 0);
    assert_int_equal(procfs_count_heaps(""), 0);
}

/* The heap headers of smaps-merged-heaps, as glibc writes them: four arenas, A and D
 * over two heaps each. */
struct header {
    uint64_t at, ar_ptr, prev, size, mprotect_size;
};
static struct header headers[] = {
    {0x7f0000000000, 0x7f0000000020, 0, 64 * MiB, 64 * MiB},              /* A, full */
    {0x7f0004000000, 0x7f0000000020, 0x7f0000000000, 0x21000, 0x21000},   /* A, next */
    {0x7f0010000000, 0x7f0010000020, 0, 0x400000, 0x400000},              /* B */
    {0x7f0018000000, 0x7f0018000020, 0, 0x201000, 0x201000},              /* C */
    {0x7f0030000000, 0x7f0030000020, 0, 64 * MiB, 64 * MiB},              /* D, full */
    {0x7f0034000000, 0x7f0030000020, 0x7f0030000000, 64 * MiB, 64 * MiB}, /* D, full */
};

static bool read_headers(void *ctx, uint64_t addr, void *buf, size_t len) {
    (void)ctx;
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
        if (headers[i].at == addr && len == 4 * sizeof(uint64_t)) {
            memcpy(buf, &headers[i].ar_ptr, len);
            return true;
        }
    return false;
}

static bool taken_c(void *ctx, uint64_t lo, uint64_t hi) {
    (void)ctx;
    return lo < 0x7f001c000000 && hi > 0x7f0018000000;
}

/* The header lines of smaps text: the maps ebb-bench samples. */
static char *maps_of(const char *smaps) {
    char *out = malloc(strlen(smaps) + 1), *o = out;
    for (const char *l = smaps; *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) + 1 : strlen(l);
        if ((*l >= '0' && *l <= '9') || (*l >= 'a' && *l <= 'f')) {
            memcpy(o, l, n);
            o += n;
        }
        l += n;
    }
    *o = '\0';
    return out;
}

/* One process, every way of looking: ebb-bench from maps, ebb-inspect from smaps with
 * and without reading the heap headers.  All count the same six heaps. */
static void test_heaps_agree_on_merged_mappings(void **state) {
    (void)state;
    char *text = sample("smaps-merged-heaps", NULL);
    char *maps = maps_of(text);
    assert_int_equal(procfs_count_heaps(maps), 6);

    struct procfs_vmas m = {0};
    assert_int_equal(procfs_vmas_parse(&m, text, true), 0);
    struct procfs_heaps layout, verified;
    assert_int_equal(procfs_find_heaps(&m, NULL, &layout), 0);
    struct procfs_heap_probe mem = {read_headers, NULL, NULL};
    assert_int_equal(procfs_find_heaps(&m, &mem, &verified), 0);
    assert_int_equal(layout.n, 6);
    assert_false(layout.verified);
    assert_int_equal(verified.n, 6);
    assert_true(verified.verified);
    assert_int_equal(verified.arenas, 4);
    for (size_t i = 0; i < 6; i++) {
        assert_true(layout.h[i].start == headers[i].at);
        assert_true(verified.h[i].start == headers[i].at);
        assert_true(verified.h[i].rw == headers[i].mprotect_size);
        assert_true(verified.h[i].arena == headers[i].ar_ptr);
    }
    /* what the layout says is read-write in each window */
    assert_true(layout.h[0].rw == 64 * MiB && layout.h[1].rw == 0x21000);
    assert_true(layout.h[2].rw == 0x400000 && layout.h[3].rw == 0x201000);
    procfs_heaps_free(&layout);
    procfs_heaps_free(&verified);

    /* a region claimed by another rule first */
    struct procfs_heap_probe claimed = {NULL, taken_c, NULL};
    assert_int_equal(procfs_find_heaps(&m, &claimed, &layout), 0);
    assert_int_equal(layout.n, 5);
    procfs_heaps_free(&layout);
    procfs_vmas_free(&m);
    free(maps);
    free(text);
}

/* What only the stronger evidence rules out. */
static void test_heaps_evidence(void **state) {
    (void)state;
    char *text = sample("smaps-merged-heaps", NULL);
    /* arena C's read-write part not mapped MAP_NORESERVE: not glibc's */
    char *c = strstr(text, "7f0018000000-7f0018201000");
    assert_non_null(c);
    char *flags = strstr(c, "VmFlags: rd wr mr mw me nr sd");
    assert_non_null(flags);
    memcpy(strstr(flags, " nr") + 1, "ac", 2);
    char *maps = maps_of(text);
    assert_int_equal(procfs_count_heaps(maps), 6); /* maps do not show it */
    struct procfs_vmas m = {0};
    assert_int_equal(procfs_vmas_parse(&m, text, true), 0);
    struct procfs_heaps h;
    assert_int_equal(procfs_find_heaps(&m, NULL, &h), 0);
    assert_int_equal(h.n, 5);
    procfs_heaps_free(&h);
    procfs_vmas_free(&m);
    free(maps);
    free(text);

    /* headers that are not glibc's: a bad size, and a first heap whose arena is gone,
     * which takes the later heap of that arena with it */
    text = sample("smaps-merged-heaps", NULL);
    m = (struct procfs_vmas){0};
    assert_int_equal(procfs_vmas_parse(&m, text, true), 0);
    struct header keep_b = headers[2], keep_d = headers[4];
    headers[2].size = 12345;
    headers[4].ar_ptr = 0x7f0030001000; /* not right after the header */
    struct procfs_heap_probe mem = {read_headers, NULL, NULL};
    assert_int_equal(procfs_find_heaps(&m, &mem, &h), 0);
    headers[2] = keep_b;
    headers[4] = keep_d;
    assert_int_equal(h.n, 3);
    assert_int_equal(h.arenas, 2);
    assert_true(h.h[0].start == 0x7f0000000000 && h.h[1].start == 0x7f0004000000 &&
                h.h[2].start == 0x7f0018000000);
    procfs_heaps_free(&h);
    procfs_vmas_free(&m);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_whole_and_bounded),
        cmocka_unit_test(test_status_fields),
        cmocka_unit_test(test_smaps_rollup),
        cmocka_unit_test(test_stat),
        cmocka_unit_test(test_environ),
        cmocka_unit_test(test_maps_line),
        cmocka_unit_test(test_smaps_parse),
        cmocka_unit_test(test_maps_files),
        cmocka_unit_test(test_heaps_typical),
        cmocka_unit_test(test_heaps_merged_neighbours),
        cmocka_unit_test(test_heaps_not_heaps),
        cmocka_unit_test(test_heaps_agree_on_merged_mappings),
        cmocka_unit_test(test_heaps_evidence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
