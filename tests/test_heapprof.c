/* ebb-inspect --heap against fake-heap-prof, a process that publishes a heap profile the
 * way ebbmalloc does, with known stacks whose frames are real return addresses in
 * libfakeheap.so (built -O2 -fomit-frame-pointer, with a C++ function and a JNI-named
 * one), in libc, in the helper and in anonymous memory (JIT code).  Checked: the top
 * stacks and their order, symbols (C and demangled C++, exact offsets, file:line, the
 * program's own .symtab, .dynsym alone when stripped), the summary by library, hints,
 * collapsed stacks, the pprof file decoded back field by field, JSON, baseline and diff
 * (also across a restart: other load addresses), --watch growth, a table rewritten while
 * read, and the trust checks (stale, wrong magic, pid, start time, slot indices, layout). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "inspect.h"
#include "testutil.h"

#define MIB ((int64_t)1 << 20)

/* Run ebb-inspect with the arguments (NULL-terminated); returns its exit code. */
static int cli(char **out, char **err, ...) {
    char *argv[24] = {(char *)test_need("EBB_INSPECT")};
    int n = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && n < 23;) argv[n++] = a;
    va_end(ap);
    int st = run_capture(argv, NULL, false, 60, out, err);
    assert_true(st != -1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- the helper and what it says its stacks are ---- */

struct xframe {
    uint64_t addr, off;
    char func[128]; /* "-" when the helper cannot know */
};
struct xstack {
    char name[16];
    int64_t live, objects;
    unsigned depth;
    struct xframe f[8];
};
struct fake {
    struct child c;
    char pid[16];
    struct xstack st[8];
    int n;
};

static const char *lib_path(void) { return test_need("FAKE_HEAP_LIB"); }

static void fake_start_lib(struct fake *fk, const char *mode, const char *lib) {
    char *argv[] = {(char *)test_need("FAKE_HEAP_PROF"), (char *)mode, (char *)lib, NULL};
    memset(fk, 0, sizeof(*fk));
    assert_int_equal(child_start(&fk->c, argv, NULL, false), 0);
    if (!child_wait_line(&fk->c, "ready", 30)) fail_msg("fake-heap-prof %s did not get ready", mode);
    snprintf(fk->pid, sizeof(fk->pid), "%d", (int)fk->c.pid);
    for (char *l = fk->c.buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char name[16], func[128];
        long long a, b;
        unsigned k;
        unsigned long long addr, off;
        if (sscanf(l, "stack %15s %lld %lld", name, &a, &b) == 3 && fk->n < 8) {
            struct xstack *s = &fk->st[fk->n++];
            snprintf(s->name, sizeof(s->name), "%s", name);
            s->live = a;
            s->objects = b;
        } else if (sscanf(l, "frame %15s %u 0x%llx 0x%llx %127[^\n]", name, &k, &addr, &off, func) == 5) {
            struct xstack *s = &fk->st[fk->n - 1];
            assert_string_equal(s->name, name);
            assert_int_equal(k, s->depth);
            s->f[k].addr = addr;
            s->f[k].off = off;
            snprintf(s->f[k].func, sizeof(s->f[k].func), "%s", func);
            s->depth++;
        }
    }
    assert_int_equal(fk->n, 7);
}

static void fake_start(struct fake *fk, const char *mode) { fake_start_lib(fk, mode, lib_path()); }

static const struct xstack *xs(const struct fake *fk, const char *name) {
    for (int i = 0; i < fk->n; i++)
        if (!strcmp(fk->st[i].name, name)) return &fk->st[i];
    fail_msg("no stack %s", name);
    return NULL;
}

/* What ebb-inspect must print for a frame the helper can name. */
static void expect_text(char *buf, size_t len, const char *module, const struct xframe *f) {
    snprintf(buf, len, "%s!%s+0x%llx", module, f->func, (unsigned long long)f->off);
}

static struct jval *heap_json_of(const struct fake *fk, const char *extra1, const char *extra2) {
    char *out, *err;
    int rc = extra2 ? cli(&out, &err, "--heap", "--json", extra1, extra2, fk->pid, NULL)
                    : cli(&out, &err, "--heap", "--json", fk->pid, NULL);
    if (rc != 0) fail_msg("ebb-inspect --heap --json exited %d: %s", rc, err);
    struct jval *j = json_parse(out);
    if (!j) fail_msg("no valid JSON: %s", out);
    free(out);
    free(err);
    return j;
}

/* The text block of stack #n ("  #n  ..." up to the next "  #" or blank line). */
static char *stack_block(const char *out, int n) {
    char tag[16];
    snprintf(tag, sizeof(tag), "\n  #%d  ", n);
    const char *p = strstr(out, tag);
    if (!p) return NULL;
    p++;
    const char *e = strstr(p + 1, "\n  #");
    const char *e2 = strstr(p, "\n\n");
    if (!e || (e2 && e2 < e)) e = e2;
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char *b = malloc(len + 1);
    memcpy(b, p, len);
    b[len] = '\0';
    return b;
}

/* ---- units ---- */

static void test_names(void **state) {
    (void)state;
    char b[300];
    heap_file_name("/dev/shm/ebbmalloc.12", b, sizeof(b));
    assert_string_equal(b, "/dev/shm/ebbmalloc.12.heap");
    assert_true(jni_java_name("Java_org_rocksdb_RocksDB_put", b, sizeof(b)));
    assert_string_equal(b, "org.rocksdb.RocksDB.put");
    assert_true(jni_java_name("Java_a_b_1c_m", b, sizeof(b)));
    assert_string_equal(b, "a.b_c.m");
    assert_true(jni_java_name("Java_p_C_m__ILjava_lang_String_2", b, sizeof(b)));
    assert_string_equal(b, "p.C.m");
    assert_false(jni_java_name("JavaX", b, sizeof(b)));
    assert_false(jni_java_name("malloc", b, sizeof(b)));
}

/* The header is refused, and the reason says why. */
static void refused_for(const struct ebb_prof_header *h, uint64_t size, pid_t pid, uint64_t st,
                        const char *why) {
    const char *r = heap_header_check(h, size, pid, st);
    if (!r || !strstr(r, why))
        fail_msg("header check gave \"%s\", expected \"%s\"", r ? r : "(trusted)", why);
}

static void test_header_check(void **state) {
    (void)state;
    struct ebb_prof_header h = {
        .magic = EBB_PROF_MAGIC,
        .version = EBB_PROF_VERSION,
        .header_size = sizeof(h),
        .pid = 42,
        .slot_count = 16,
        .start_time = 777,
        .sample_interval = 1 << 19,
        .frames_offset = sizeof(h) + 16 * sizeof(struct ebb_prof_slot),
        .frames_cap = 100,
    };
    uint64_t size = h.frames_offset + 100 * 8;
    assert_null(heap_header_check(&h, size, 42, 777));
    refused_for(&h, size - 1, 42, 777, "frames area runs past the end");
    refused_for(&h, size, 43, 777, "another pid");
    refused_for(&h, size, 42, 778, "earlier process");
    struct ebb_prof_header b = h;
    b.magic++;
    refused_for(&b, size, 42, 777, "magic");
    b = h;
    b.version++;
    refused_for(&b, size, 42, 777, "version");
    b = h;
    b.slot_count = 12;
    refused_for(&b, size, 42, 777, "power of two");
    b = h;
    b.header_size = 8;
    refused_for(&b, size, 42, 777, "header_size");
    b = h;
    b.frames_offset -= 8; /* overlaps the last slot */
    refused_for(&b, size, 42, 777, "overlaps");
    b = h;
    b.slot_count = 1u << 31; /* slots far past the end, without overflow */
    refused_for(&b, size, 42, 777, "slots run past");
    b = h;
    b.frames_offset = UINT64_MAX - 7;
    refused_for(&b, size, 42, 777, "frames area");
}

/* Frames outside any file, from a hand-made mapping list. */
static void test_sym_kinds(void **state) {
    (void)state;
    struct procfs_vma v[3] = {
        {.start = 0x10000, .end = 0x20000, .path = ""},
        {.start = 0x20000, .end = 0x21000, .path = "[anon:jit]"},
        {.start = 0x30000, .end = 0x32000, .path = "[vdso]"},
    };
    struct procfs_vmas m = {.v = v, .n = 3, .cap = 3};
    struct symbolizer *s = sym_new();
    assert_non_null(s);
    const struct frame_sym *f = sym_lookup(s, NULL, &m, 0x10010);
    assert_string_equal(f->text, "[jit or anonymous 0x10010]");
    assert_string_equal(f->key, "[jit or anonymous]");
    assert_int_equal(f->kind, FRAME_ANON);
    assert_string_equal(sym_lookup(s, NULL, &m, 0x20001)->key, "[jit or anonymous]");
    /* a return address just past a mapping: its call lies inside it */
    assert_string_equal(sym_lookup(s, NULL, &m, 0x20000)->text, "[jit or anonymous 0x20000]");
    f = sym_lookup(s, NULL, &m, 0x30100);
    assert_string_equal(f->text, "[vdso 0x30100]");
    assert_string_equal(f->key, "[vdso]");
    f = sym_lookup(s, NULL, &m, 0x40000);
    assert_string_equal(f->text, "[unmapped 0x40000]");
    assert_int_equal(f->kind, FRAME_UNMAPPED);
    f = sym_lookup(s, NULL, &m, 0);
    assert_string_equal(f->key, "[table full]");
    assert_non_null(strstr(f->text, "the table was full"));
    assert_ptr_equal(sym_lookup(s, NULL, &m, 0x10010), sym_lookup(s, NULL, &m, 0x10010)); /* cached */
    sym_free(s);
}

/* ---- reading and printing ---- */

static void test_top_stacks(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "ok");
    char *out, *err;
    int rc = cli(&out, &err, "--heap", fk.pid, NULL);
    if (rc != 0) fail_msg("ebb-inspect --heap exited %d: %s", rc, err);
    /* biggest first, the freed stack (0 live) and the half-written slot (99 MiB) absent */
    assert_non_null(strstr(out, "top 6 stacks by estimated live bytes, of 6"));
    assert_non_null(strstr(out, "estimated live: 94.0 MiB in 9088 objects"));
    assert_null(strstr(out, "99.0 MiB"));
    const char *sizes[] = {"48.0 MiB live in 3072 objects", "24.0 MiB live in 384 objects",
                           "12.0 MiB live in 3072 objects", "6.00 MiB live in 1536 objects",
                           "3.00 MiB live in 768 objects",  "1.00 MiB live in 256 objects"};
    const char *names[] = {"jni", "big", "cpp", "libc", "exe", "jitc"};
    char want[300];
    for (int i = 0; i < 6; i++) {
        char *b = stack_block(out, i + 1);
        if (!b || !strstr(b, sizes[i])) fail_msg("stack #%d is not %s:\n%s", i + 1, sizes[i], out);
        const struct xstack *s = xs(&fk, names[i]);
        for (unsigned k = 0; k < s->depth; k++) {
            if (!strcmp(s->f[k].func, "-")) continue;
            expect_text(want, sizeof(want), !strcmp(names[i], "exe") ? "fake-heap-prof" : "libfakeheap.so",
                        &s->f[k]);
            if (!strstr(b, want)) fail_msg("stack #%d lacks frame %s:\n%s", i + 1, want, b);
        }
        free(b);
    }
    char *b = stack_block(out, 1);
    /* the JNI function with its whole name, its source line, JIT frames as such */
    assert_non_null(strstr(b, "* libfakeheap.so!Java_org_ebbmalloc_fake_Native_grow+0x"));
    assert_non_null(strstr(b, "(fake_heap_lib.c:"));
    assert_non_null(strstr(b, "[jit or anonymous 0x"));
    free(b);
    /* C++ demangled */
    b = stack_block(out, 3);
    assert_non_null(strstr(b, "libfakeheap.so!ebbtest::Cache::fill(void (*)(), unsigned long)+0x"));
    assert_non_null(strstr(b, "(fake_heap_lib_cpp.cpp:"));
    free(b);
    /* libc's frame is not what the stack is counted under: the library's is */
    b = stack_block(out, 4);
    assert_non_null(strstr(b, "  libc.so.6"));
    assert_non_null(strstr(b, "* libfakeheap.so!fake_sort_site+0x"));
    free(b);
    /* the program's own static function, from its .symtab, and its caller */
    b = stack_block(out, 5);
    assert_non_null(strstr(b, "* fake-heap-prof!noise_site+0x"));
    assert_non_null(strstr(b, "fake-heap-prof!build+0x"));
    free(b);
    /* libc then JIT: counted under the JIT frame */
    b = stack_block(out, 6);
    assert_non_null(strstr(b, "* [jit or anonymous 0x"));
    free(b);
    /* by library, biggest first */
    const char *lib = strstr(out, "\nby library");
    assert_non_null(lib);
    const char *l1 = strstr(lib, "libfakeheap.so"), *l2 = strstr(lib, "fake-heap-prof"),
               *l3 = strstr(lib, "[jit or anonymous]");
    assert_true(l1 && l2 && l3 && l1 < l2 && l2 < l3);
    assert_non_null(strstr(l1, "90.0 MiB  95.7%"));
    /* the hint names the JNI function and the Java method it stands for */
    const char *h = strstr(out, "\nhints:");
    assert_non_null(h);
    assert_non_null(strstr(h, "48.0 MiB of the 94.0 MiB estimated live (51%) was allocated under one "
                              "JNI function, Java_org_ebbmalloc_fake_Native_grow (in libfakeheap.so)"));
    assert_non_null(strstr(h, "org.ebbmalloc.fake.Native.grow()"));
    free(out);
    free(err);
    child_stop(&fk.c);
}

static void test_json(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "ok");
    struct jval *j = heap_json_of(&fk, NULL, NULL);
    assert_string_equal(json_str(j, "heap_profile.state"), "ok");
    assert_int_equal((int64_t)json_num(j, "heap_profile.live_bytes"), 94 * MIB);
    assert_int_equal((int64_t)json_num(j, "heap_profile.sample_interval_bytes"), 512 << 10);
    assert_int_equal((int64_t)json_num(j, "heap_profile.samples"), 200);
    assert_int_equal((int64_t)json_num(j, "heap_profile.slot_count"), 64);
    const struct jval *stacks = json_at(j, "heap_profile.stacks");
    assert_non_null(stacks);
    assert_int_equal(stacks->n, 7); /* the freed stack too: it is in the table */
    const char *order[] = {"jni", "big", "cpp", "libc", "exe", "jitc", "freed"};
    const char *libs[] = {"libfakeheap.so", "libfakeheap.so",     "libfakeheap.so", "libfakeheap.so",
                          "fake-heap-prof", "[jit or anonymous]", "libfakeheap.so"};
    for (size_t i = 0; i < 7; i++) {
        const struct jval *s = &stacks->items[i];
        const struct xstack *x = xs(&fk, order[i]);
        assert_int_equal((int64_t)json_num(s, "live_bytes"), x->live);
        assert_int_equal((int64_t)json_num(s, "live_objects"), x->objects);
        assert_string_equal(json_str(s, "library"), libs[i]);
        const struct jval *fr = json_at(s, "frames");
        assert_int_equal(fr->n, x->depth);
        for (unsigned k = 0; k < x->depth; k++) {
            const struct jval *f = &fr->items[k];
            /* every address exactly as the table holds it */
            assert_int_equal(strtoull(json_str(f, "address"), NULL, 16), x->f[k].addr);
            if (strcmp(x->f[k].func, "-")) {
                assert_string_equal(json_str(f, "function"), x->f[k].func);
                assert_int_equal((uint64_t)json_num(f, "offset"), x->f[k].off);
                assert_string_equal(json_str(f, "kind"), "file");
            }
        }
    }
    assert_int_equal((int)json_num(&stacks->items[3], "attributed_frame"), 1); /* libc skipped */
    assert_int_equal((int)json_num(&stacks->items[5], "attributed_frame"), 1);
    const struct jval *f0 = json_at(&stacks->items[0], "frames.0");
    assert_string_equal(json_str(f0, "library"), "libfakeheap.so");
    assert_int_equal(strlen(json_str(f0, "build_id")), 40);
    assert_true(json_num(f0, "line") > 0);
    const char *src = json_str(f0, "file");
    assert_non_null(src);
    assert_non_null(strstr(src, "fake_heap_lib.c"));
    assert_string_equal(json_str(&stacks->items[0], "frames.1.kind"), "jit_or_anonymous");
    assert_string_equal(json_str(&stacks->items[2], "frames.0.system_name"), "_ZN7ebbtest5Cache4fillEPFvvEm");
    assert_string_equal(json_str(&stacks->items[3], "frames.0.library"), "libc.so.6");
    const struct jval *libsum = json_at(j, "heap_profile.libraries");
    assert_int_equal(libsum->n, 3);
    assert_string_equal(json_str(libsum, "0.library"), "libfakeheap.so");
    assert_int_equal((int64_t)json_num(libsum, "0.live_bytes"), 90 * MIB);
    assert_int_equal((int)json_num(libsum, "0.stacks"), 4);
    assert_int_equal((int64_t)json_num(libsum, "1.live_bytes"), 3 * MIB);
    assert_int_equal((int64_t)json_num(libsum, "2.live_bytes"), 1 * MIB);
    assert_non_null(json_at(j, "heap_profile.hints.0"));
    assert_int_equal(json_at(j, "heap_profile.growth")->t, J_NULL);
    /* the rest of the inspection is still there */
    assert_int_equal((int)json_num(j, "pid"), fk.c.pid);
    json_free(j);

    /* without --heap, the key is present and null */
    char *out, *err;
    assert_int_equal(cli(&out, &err, "--json", fk.pid, NULL), 0);
    j = json_parse(out);
    assert_non_null(j);
    assert_int_equal(json_at(j, "heap_profile")->t, J_NULL);
    json_free(j);
    free(out);
    free(err);
    child_stop(&fk.c);
}

static void test_collapsed(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "ok");
    char *out, *err;
    assert_int_equal(cli(&out, &err, "--heap", "--collapsed", fk.pid, NULL), 0);
    const char *want[] = {
        "[jit or anonymous];[jit or anonymous];libfakeheap.so!Java_org_ebbmalloc_fake_Native_grow 50331648\n",
        "fake-heap-prof!build;libfakeheap.so!fake_leak_big 25165824\n",
        "fake-heap-prof!build;libfakeheap.so!ebbtest::Cache::fill(void (*)(), unsigned long) 12582912\n",
        "fake-heap-prof!build;fake-heap-prof!noise_site 3145728\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(out, want[i])) fail_msg("collapsed output lacks %s in:\n%s", want[i], out);
    /* every line: root first, ';'-joined, a space, the bytes; they add up to the total */
    int lines = 0;
    long long sum = 0;
    bool libc_line = false;
    for (char *l = out; *l; l = strchr(l, '\n') + 1) {
        char *nl = strchr(l, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char *sp = strrchr(l, ' ');
        assert_non_null(sp);
        char *e;
        long long v = strtoll(sp + 1, &e, 10);
        assert_true(*e == '\0' && v > 0);
        sum += v;
        lines++;
        static const char libc_pre[] = "fake-heap-prof!build;libfakeheap.so!fake_sort_site;libc.so.6!";
        if (!strncmp(l, libc_pre, sizeof(libc_pre) - 1)) libc_line = v == 6 * MIB;
        *nl = '\n';
    }
    assert_int_equal(lines, 6);
    assert_int_equal(sum, 94 * MIB);
    assert_true(libc_line);
    free(out);
    free(err);
    child_stop(&fk.c);
}

/* ---- pprof, decoded back ---- */

struct pbf {
    unsigned field, wt;
    uint64_t v;
    const uint8_t *p;
    size_t n;
};

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return true;
    }
    return false;
}

static bool pb_next(const uint8_t **p, const uint8_t *end, struct pbf *f) {
    uint64_t key;
    if (*p >= end || !varint(p, end, &key)) return false;
    f->field = (unsigned)(key >> 3);
    f->wt = (unsigned)(key & 7);
    if (f->wt == 0) return varint(p, end, &f->v);
    if (f->wt == 2) {
        uint64_t n;
        if (!varint(p, end, &n) || n > (uint64_t)(end - *p)) return false;
        f->p = *p;
        f->n = (size_t)n;
        *p += n;
        return true;
    }
    fail_msg("unexpected wire type %u in field %u", f->wt, f->field);
    return false;
}

/* Packed (or single) varints of field f into out; returns the count. */
static size_t unpack(const struct pbf *f, uint64_t *out, size_t max) {
    if (f->wt == 0) {
        out[0] = f->v;
        return 1;
    }
    const uint8_t *p = f->p, *e = f->p + f->n;
    size_t n = 0;
    while (p < e && n < max) assert_true(varint(&p, e, &out[n++]));
    return n;
}

struct pline {
    uint64_t fn;
    int64_t line;
};
struct ploc {
    uint64_t id, mapping, address;
    struct pline lines[4];
    size_t nlines;
};
struct pfn {
    uint64_t id;
    int64_t name, system_name, filename;
};
struct pmap {
    uint64_t id, start, limit, offset;
    int64_t filename, build_id;
    bool fns, files, lines;
};
struct psample {
    uint64_t locs[64];
    size_t nlocs;
    int64_t values[4];
    size_t nvalues;
};
struct prof {
    char *strings[4096];
    size_t nstrings;
    int64_t st_type[4], st_unit[4];
    size_t nst;
    struct psample samples[16];
    size_t nsamples;
    struct ploc locs[64];
    size_t nlocs;
    struct pfn fns[64];
    size_t nfns;
    struct pmap maps[16];
    size_t nmaps;
    int64_t period_type, period_unit, period, default_type, time_nanos;
    int64_t comments[4];
    size_t ncomments;
};

static void value_type(const struct pbf *f, int64_t *type, int64_t *unit) {
    const uint8_t *p = f->p, *e = f->p + f->n;
    struct pbf g;
    while (pb_next(&p, e, &g))
        if (g.field == 1) *type = (int64_t)g.v;
        else if (g.field == 2) *unit = (int64_t)g.v;
}

static void decode(const uint8_t *buf, size_t len, struct prof *pr) {
    memset(pr, 0, sizeof(*pr));
    const uint8_t *p = buf, *end = buf + len;
    struct pbf f, g;
    while (pb_next(&p, end, &f)) {
        const uint8_t *q = f.p, *qe = f.p + f.n;
        switch (f.field) {
        case 1:
            assert_true(pr->nst < 4);
            value_type(&f, &pr->st_type[pr->nst], &pr->st_unit[pr->nst]);
            pr->nst++;
            break;
        case 2: {
            assert_true(pr->nsamples < 16);
            struct psample *s = &pr->samples[pr->nsamples++];
            while (pb_next(&q, qe, &g))
                if (g.field == 1) s->nlocs += unpack(&g, s->locs + s->nlocs, 64 - s->nlocs);
                else if (g.field == 2)
                    s->nvalues += unpack(&g, (uint64_t *)s->values + s->nvalues, 4 - s->nvalues);
            break;
        }
        case 3: {
            assert_true(pr->nmaps < 16);
            struct pmap *m = &pr->maps[pr->nmaps++];
            while (pb_next(&q, qe, &g)) switch (g.field) {
                case 1: m->id = g.v; break;
                case 2: m->start = g.v; break;
                case 3: m->limit = g.v; break;
                case 4: m->offset = g.v; break;
                case 5: m->filename = (int64_t)g.v; break;
                case 6: m->build_id = (int64_t)g.v; break;
                case 7: m->fns = g.v; break;
                case 8: m->files = g.v; break;
                case 9: m->lines = g.v; break;
                default: break;
                }
            break;
        }
        case 4: {
            assert_true(pr->nlocs < 64);
            struct ploc *l = &pr->locs[pr->nlocs++];
            while (pb_next(&q, qe, &g))
                if (g.field == 1) l->id = g.v;
                else if (g.field == 2) l->mapping = g.v;
                else if (g.field == 3) l->address = g.v;
                else if (g.field == 4) {
                    assert_true(l->nlines < 4);
                    struct pline *ln = &l->lines[l->nlines++];
                    const uint8_t *r = g.p, *re = g.p + g.n;
                    struct pbf h;
                    while (pb_next(&r, re, &h))
                        if (h.field == 1) ln->fn = h.v;
                        else if (h.field == 2) ln->line = (int64_t)h.v;
                }
            break;
        }
        case 5: {
            assert_true(pr->nfns < 64);
            struct pfn *fn = &pr->fns[pr->nfns++];
            while (pb_next(&q, qe, &g))
                if (g.field == 1) fn->id = g.v;
                else if (g.field == 2) fn->name = (int64_t)g.v;
                else if (g.field == 3) fn->system_name = (int64_t)g.v;
                else if (g.field == 4) fn->filename = (int64_t)g.v;
            break;
        }
        case 6:
            assert_true(pr->nstrings < 4096);
            pr->strings[pr->nstrings] = strndup((const char *)f.p, f.n);
            pr->nstrings++;
            break;
        case 9: pr->time_nanos = (int64_t)f.v; break;
        case 11: value_type(&f, &pr->period_type, &pr->period_unit); break;
        case 12: pr->period = (int64_t)f.v; break;
        case 13:
            pr->ncomments += unpack(&f, (uint64_t *)pr->comments + pr->ncomments, 4 - pr->ncomments);
            break;
        case 14: pr->default_type = (int64_t)f.v; break;
        default: fail_msg("unexpected Profile field %u", f.field);
        }
    }
    assert_true(p == end); /* the whole message parsed */
}

static const char *pstr(const struct prof *pr, int64_t i) {
    if (i < 0 || (size_t)i >= pr->nstrings) fail_msg("string index %lld out of range", (long long)i);
    return pr->strings[i];
}

static const struct ploc *ploc(const struct prof *pr, uint64_t id) {
    for (size_t i = 0; i < pr->nlocs; i++)
        if (pr->locs[i].id == id) return &pr->locs[i];
    fail_msg("location %llu missing", (unsigned long long)id);
    return NULL;
}

static const struct pfn *pfn(const struct prof *pr, uint64_t id) {
    for (size_t i = 0; i < pr->nfns; i++)
        if (pr->fns[i].id == id) return &pr->fns[i];
    fail_msg("function %llu missing", (unsigned long long)id);
    return NULL;
}

static const struct pmap *pmap(const struct prof *pr, uint64_t id) {
    for (size_t i = 0; i < pr->nmaps; i++)
        if (pr->maps[i].id == id) return &pr->maps[i];
    fail_msg("mapping %llu missing", (unsigned long long)id);
    return NULL;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static void test_pprof(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "ok");
    char file[] = "/tmp/ebb-heap-pprof-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    close(fd);
    char *out, *err;
    int rc = cli(&out, &err, "--heap", "--pprof", file, fk.pid, NULL);
    if (rc != 0) fail_msg("--pprof exited %d: %s", rc, err);
    assert_non_null(strstr(out, file));
    free(out);
    free(err);
    struct jval *j = heap_json_of(&fk, NULL, NULL);

    /* gzip, as pprof wants it on disk */
    fd = open(file, O_RDONLY);
    unsigned char magic[2];
    assert_int_equal(read(fd, magic, 2), 2);
    close(fd);
    assert_true(magic[0] == 0x1f && magic[1] == 0x8b);
    gzFile gz = gzopen(file, "rb");
    assert_non_null(gz);
    static uint8_t buf[1 << 20];
    int n = gzread(gz, buf, sizeof(buf));
    gzclose(gz);
    unlink(file);
    assert_true(n > 0 && n < (int)sizeof(buf));
    static struct prof pr;
    decode(buf, (size_t)n, &pr);

    assert_true(pr.nstrings > 0);
    assert_string_equal(pr.strings[0], "");
    assert_int_equal(pr.nst, 2);
    assert_string_equal(pstr(&pr, pr.st_type[0]), "inuse_objects");
    assert_string_equal(pstr(&pr, pr.st_unit[0]), "count");
    assert_string_equal(pstr(&pr, pr.st_type[1]), "inuse_space");
    assert_string_equal(pstr(&pr, pr.st_unit[1]), "bytes");
    assert_string_equal(pstr(&pr, pr.period_type), "space");
    assert_string_equal(pstr(&pr, pr.period_unit), "bytes");
    assert_int_equal(pr.period, 512 << 10);
    assert_string_equal(pstr(&pr, pr.default_type), "inuse_space");
    assert_true(pr.time_nanos > 0);
    assert_int_equal(pr.ncomments, 1);
    assert_non_null(strstr(pstr(&pr, pr.comments[0]), fk.pid));
    /* mapping 1 is the program itself */
    assert_true(pr.nmaps >= 3);
    assert_int_equal(pr.maps[0].id, 1);
    assert_true(ends_with(pstr(&pr, pr.maps[0].filename), "/fake-heap-prof"));

    /* the live stacks, each with both values; they add up */
    assert_int_equal(pr.nsamples, 6);
    int64_t bytes = 0, objects = 0;
    for (size_t i = 0; i < pr.nsamples; i++) {
        assert_int_equal(pr.samples[i].nvalues, 2);
        objects += pr.samples[i].values[0];
        bytes += pr.samples[i].values[1];
    }
    assert_int_equal(bytes, 94 * MIB);
    assert_int_equal(objects, 9088);
    /* each sample is one of the helper's stacks, leaf first, address by address */
    const char *names[] = {"jni", "big", "cpp", "libc", "exe", "jitc"};
    bool seen[6] = {false};
    for (size_t i = 0; i < pr.nsamples; i++) {
        const struct psample *s = &pr.samples[i];
        int w = -1;
        for (int k = 0; k < 6; k++)
            if (xs(&fk, names[k])->live == s->values[1]) w = k;
        assert_true(w >= 0 && !seen[w]);
        seen[w] = true;
        const struct xstack *x = xs(&fk, names[w]);
        assert_int_equal(s->nlocs, x->depth);
        assert_int_equal(s->values[0], x->objects);
        for (unsigned k = 0; k < x->depth; k++) {
            const struct ploc *l = ploc(&pr, s->locs[k]);
            assert_int_equal(l->address, x->f[k].addr - 1); /* inside the call */
            assert_int_equal(l->nlines, 1);
            const struct pfn *fn = pfn(&pr, l->lines[0].fn);
            if (strcmp(x->f[k].func, "-")) {
                assert_string_equal(pstr(&pr, fn->name), x->f[k].func);
                assert_true(l->lines[0].line > 0);
                const struct pmap *m = pmap(&pr, l->mapping);
                assert_true(m->start <= l->address && l->address < m->limit);
                assert_true(m->fns && m->lines);
                const char *want = !strcmp(names[w], "exe") ? "/fake-heap-prof" : "/libfakeheap.so";
                assert_true(ends_with(pstr(&pr, m->filename), want));
                assert_true(ends_with(pstr(&pr, fn->filename), !strcmp(names[w], "exe") ? "fake_heap_prof.c"
                                                               : !strcmp(names[w], "cpp")
                                                                   ? "fake_heap_lib_cpp.cpp"
                                                                   : "fake_heap_lib.c"));
                if (!strcmp(names[w], "jni"))
                    assert_string_equal(pstr(&pr, m->build_id),
                                        json_str(j, "heap_profile.stacks.0.frames.0.build_id"));
                if (!strcmp(names[w], "cpp"))
                    assert_string_equal(pstr(&pr, fn->system_name), "_ZN7ebbtest5Cache4fillEPFvvEm");
            } else if (!strcmp(names[w], "jni") || (!strcmp(names[w], "jitc") && k == 1)) {
                assert_int_equal(l->mapping, 0);
                assert_string_equal(pstr(&pr, fn->name), "[jit or anonymous]");
            }
        }
    }
    for (size_t i = 0; i < pr.nstrings; i++) free(pr.strings[i]);
    json_free(j);
    child_stop(&fk.c);
}

/* ---- growth ---- */

static void grow(struct fake *fk, int n) {
    char want[16];
    snprintf(want, sizeof(want), "grew %d", n);
    kill(fk->c.pid, SIGUSR1);
    if (!child_wait_line(&fk->c, want, 10)) fail_msg("fake-heap-prof did not say %s", want);
}

static char *read_all(const char *file) {
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    static char b[1 << 16];
    size_t n = fread(b, 1, sizeof(b) - 1, f);
    fclose(f);
    b[n] = '\0';
    return b;
}

static void test_baseline_diff(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "ok");
    char file[] = "/tmp/ebb-heap-base-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    close(fd);
    char *out, *err;
    int rc = cli(&out, &err, "--heap", "--baseline", file, fk.pid, NULL);
    if (rc != 0) fail_msg("--baseline exited %d: %s", rc, err);
    assert_non_null(strstr(out, "baseline of 7 stacks saved to"));
    free(out);
    free(err);
    /* the documented format: a magic line, the process, one record per stack and frame */
    const char *b = read_all(file);
    assert_int_equal(strncmp(b, "ebb-inspect heap baseline 1\npid ", 32), 0);
    assert_non_null(strstr(b, "\nsample_interval 524288\n"));
    assert_non_null(strstr(b, "\nstack 50331648 3072 58720256 3584 3\n"
                              "f libfakeheap.so!Java_org_ebbmalloc_fake_Native_grow+0x"));
    assert_non_null(strstr(b, "\nf [jit or anonymous]\nf [jit or anonymous]\n"));
    assert_non_null(strstr(b, "\nmodule "));
    assert_non_null(strstr(b, "/libfakeheap.so\n"));
    assert_non_null(strstr(b, "\nend\n"));

    /* nothing grew yet */
    rc = cli(&out, &err, "--heap", "--diff", file, fk.pid, NULL);
    if (rc != 0) fail_msg("--diff exited %d: %s", rc, err);
    assert_non_null(strstr(out, "0 stacks grew"));
    free(out);
    free(err);

    /* jni +8 MiB, big -4 MiB: only jni shows */
    grow(&fk, 1);
    rc = cli(&out, &err, "--heap", "--diff", file, fk.pid, NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "estimated live 94.0 MiB -> 98.0 MiB (+4.00 MiB); 1 stack grew"));
    char *blk = stack_block(out, 1);
    assert_non_null(blk);
    assert_non_null(strstr(blk, "#1  +8.00 MiB, +512 objects (48.0 MiB -> 56.0 MiB)"));
    assert_non_null(strstr(blk, "libfakeheap.so!Java_org_ebbmalloc_fake_Native_grow+0x"));
    free(blk);
    assert_null(strstr(out, "  #2  "));
    assert_null(strstr(out, "fake_leak_big"));
    assert_non_null(strstr(out, "8.00 MiB of the 8.00 MiB growth (100%) is under one JNI function, "
                                "Java_org_ebbmalloc_fake_Native_grow"));
    free(out);
    free(err);

    struct jval *j = heap_json_of(&fk, "--diff", file);
    const struct jval *g = json_at(j, "heap_profile.growth.stacks");
    assert_non_null(g);
    assert_int_equal(g->n, 1);
    assert_int_equal((int64_t)json_num(g, "0.growth_bytes"), 8 * MIB);
    assert_int_equal((int64_t)json_num(g, "0.growth_objects"), 512);
    assert_int_equal((int64_t)json_num(g, "0.live_bytes"), 56 * MIB);
    assert_int_equal((int64_t)json_num(g, "0.base_live_bytes"), 48 * MIB);
    assert_string_equal(json_str(g, "0.frames.0.function"), "Java_org_ebbmalloc_fake_Native_grow");
    assert_int_equal((int64_t)json_num(j, "heap_profile.growth.base_live_bytes"), 94 * MIB);
    json_free(j);
    child_stop(&fk.c);

    /* a restart: another process, its libraries at other addresses, the same stacks */
    struct fake f2;
    fake_start(&f2, "ok");
    assert_true(xs(&f2, "jni")->f[0].addr != xs(&fk, "jni")->f[0].addr);
    rc = cli(&out, &err, "--heap", "--diff", file, f2.pid, NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "the baseline is of another process"));
    assert_non_null(strstr(out, "0 stacks grew"));
    free(out);
    free(err);
    grow(&f2, 1);
    rc = cli(&out, &err, "--heap", "--diff", file, f2.pid, NULL);
    assert_non_null(strstr(out, "1 stack grew"));
    assert_non_null(strstr(out, "#1  +8.00 MiB"));
    free(out);
    free(err);
    child_stop(&f2.c);

    /* not a baseline, or a cut one: refused with the line */
    FILE *f = fopen(file, "w");
    fputs("ebb-inspect heap baseline 1\npid 1\nstack 1 1 1 1 2\nf a\n", f);
    fclose(f);
    fake_start(&f2, "ok");
    rc = cli(&out, &err, "--heap", "--diff", file, f2.pid, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "line 4: the file ends before \"end\""));
    free(out);
    free(err);
    f = fopen(file, "w");
    fputs("hello\n", f);
    fclose(f);
    rc = cli(&out, &err, "--heap", "--diff", file, f2.pid, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "line 1: not an ebb-inspect heap baseline"));
    free(out);
    free(err);
    child_stop(&f2.c);
    unlink(file);
}

static void test_watch(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "ok");
    char *argv[] = {
        (char *)test_need("EBB_INSPECT"), "--heap", "--watch", "0.2", "--count", "300", fk.pid, NULL};
    struct child w;
    assert_int_equal(child_start(&w, argv, NULL, false), 0);
    /* the first sample is the full report; later ones show growth since it */
    if (!child_wait_line(&w, "hints:", 30)) fail_msg("no first report: %s", w.buf);
    if (!child_wait_line(&w, "+", 30)) fail_msg("no growth sample: %s", w.buf);
    assert_non_null(strstr(w.buf, "0 stacks grew"));
    grow(&fk, 1);
    double end = test_now() + 30;
    const char *line = NULL;
    while (test_now() < end && !line) {
        child_wait_line(&w, "+zz", 0.2); /* read what came, without a fixed wait */
        line = strstr(w.buf, "+8.00 MiB     +512 objects  now  56.0 MiB  "
                             "libfakeheap.so!Java_org_ebbmalloc_fake_Native_grow+0x");
    }
    if (!line) fail_msg("--watch showed no growth of the JNI stack:\n%s", w.buf);
    const char *hdr = strstr(w.buf, "(+4.00 MiB since the first sample), 1 stack grew");
    assert_non_null(hdr);
    assert_true(hdr < line);
    child_stop(&w);
    child_stop(&fk.c);
}

/* ---- trust ---- */

static void test_refused(void **state) {
    (void)state;
    static const struct {
        const char *mode, *why;
    } cases[] = {
        {"stale", "exists but the process does not map it"},
        {"badmagic", "wrong magic: not an ebbmalloc heap profile"},
        {"wrongpid", "the profile names another pid"},
        {"wrongstart", "start_time differs from the process's"},
        {"badslot", "slot 9 points at frames 1023..1025, outside the frames area (1024 frames)"},
        {"baddepth", "slot 9 claims 65 frames, more than 64"},
        {"badlayout", "the frames area runs past the end of the file"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake fk;
        fake_start(&fk, cases[i].mode);
        char *out, *err;
        int rc = cli(&out, &err, "--heap", fk.pid, NULL);
        if (rc != 3 || !strstr(err, cases[i].why) || !strstr(err, "no heap profile trusted"))
            fail_msg("%s: exit %d, stderr: %s", cases[i].mode, rc, err);
        assert_null(strstr(out, "libfakeheap")); /* nothing of it shown */
        free(out);
        free(err);
        rc = cli(&out, &err, "--heap", "--json", fk.pid, NULL);
        assert_int_equal(rc, 3);
        struct jval *j = json_parse(out);
        assert_non_null(j);
        assert_string_equal(json_str(j, "heap_profile.state"), "refused");
        assert_non_null(strstr(json_str(j, "heap_profile.detail"), cases[i].why));
        assert_null(json_at(j, "heap_profile.stacks"));
        json_free(j);
        free(out);
        free(err);
        child_stop(&fk.c);
    }
    /* a process with no profile at all: this test */
    char me[16], *out, *err;
    snprintf(me, sizeof(me), "%d", (int)getpid());
    assert_int_equal(cli(&out, &err, "--heap", me, NULL), 3);
    assert_non_null(strstr(err, "no heap profile published"));
    assert_non_null(strstr(err, "maps no /dev/shm/ebbmalloc."));
    free(out);
    free(err);
}

/* A slot republished all the time: every read is consistent, never a torn stack. */
static void test_busy(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "busy");
    const struct xstack *big = xs(&fk, "big"), *cpp = xs(&fk, "cpp");
    int seen_toggle = 0;
    for (int round = 0; round < 25; round++) {
        struct jval *j = heap_json_of(&fk, NULL, NULL);
        const struct jval *stacks = json_at(j, "heap_profile.stacks");
        size_t n = stacks->n;
        assert_true(n == 7 || n == 8);
        assert_int_equal((int64_t)json_num(stacks, "0.live_bytes"), 48 * MIB);
        for (size_t i = 0; i < n; i++) {
            const struct jval *s = &stacks->items[i];
            if (json_num(s, "live_bytes") != (double)MIB || json_num(s, "live_objects") != 64) continue;
            /* the toggling slot: exactly big's two frames, or cpp's two and a JIT frame */
            const struct jval *fr = json_at(s, "frames");
            uint64_t a0 = strtoull(json_str(fr, "0.address"), NULL, 16);
            uint64_t a1 = strtoull(json_str(fr, "1.address"), NULL, 16);
            if (fr->n == 2) assert_true(a0 == big->f[0].addr && a1 == big->f[1].addr);
            else if (fr->n == 3) {
                assert_true(a0 == cpp->f[0].addr && a1 == cpp->f[1].addr);
                assert_string_equal(json_str(fr, "2.kind"), "jit_or_anonymous");
            } else fail_msg("torn stack of %zu frames", fr->n);
            seen_toggle++;
        }
        json_free(j);
    }
    assert_true(seen_toggle > 0);
    child_stop(&fk.c);
}

static void test_full_and_stats(void **state) {
    (void)state;
    struct fake fk;
    fake_start(&fk, "full");
    char *out, *err;
    assert_int_equal(cli(&out, &err, "--heap", fk.pid, NULL), 0);
    assert_non_null(strstr(out, "200 samples, 7 dropped"));
    assert_non_null(strstr(out, "7 samples could not be recorded"));
    free(out);
    free(err);
    child_stop(&fk.c);

    /* the profile (mapped lower, so first in the maps) does not hide the stats page */
    fake_start(&fk, "withstats");
    struct jval *j = heap_json_of(&fk, NULL, NULL);
    assert_string_equal(json_str(j, "ebbmalloc.stats_page"), "ok");
    assert_string_equal(json_str(j, "heap_profile.state"), "ok");
    json_free(j);
    assert_int_equal(cli(&out, &err, "--heap", fk.pid, NULL), 0);
    assert_non_null(strstr(out, "(ebbmalloc's stats page: 90.0 MiB in use)"));
    free(out);
    free(err);
    child_stop(&fk.c);
}

/* Random slots and frames behind a valid header: shown when every index is in range,
 * refused when one is not, never a crash. */
static void test_garbage(void **state) {
    (void)state;
    for (int round = 0; round < 24; round++) {
        bool bad = round % 2;
        struct fake fk;
        fake_start(&fk, bad ? "garbagebad" : "garbage");
        const char *modes[] = {"--heap", "--json", "--collapsed"};
        for (int m = 0; m < 3; m++) {
            char *out, *err;
            int rc = m == 1 ? cli(&out, &err, "--heap", "--json", fk.pid, NULL)
                            : cli(&out, &err, modes[m], fk.pid, NULL);
            bool ok = bad ? rc == 3 && strstr(err, "corrupt or foreign table, not read") : rc == 0;
            if (!ok)
                fail_msg("garbage round %d (%s) %s: exit %d, stderr %s", round,
                         bad ? "an index out of range" : "all in range", modes[m], rc, err);
            if (m == 1) {
                struct jval *j = json_parse(out);
                assert_non_null(j);
                assert_string_equal(json_str(j, "heap_profile.state"), bad ? "refused" : "ok");
                json_free(j);
            }
            free(out);
            free(err);
        }
        child_stop(&fk.c);
    }
}

/* A stripped library: names from .dynsym alone, no lines. */
static void test_stripped(void **state) {
    (void)state;
    char dir[] = "/tmp/ebb-heap-strip-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char lib[300];
    snprintf(lib, sizeof(lib), "%s/libfakeheap.so", dir);
    char *argv[] = {"/usr/bin/objcopy", "--strip-all", (char *)lib_path(), lib, NULL};
    char *out, *err;
    int st = run_capture(argv, NULL, false, 60, &out, &err);
    if (st != 0) fail_msg("objcopy --strip-all failed: %s", err);
    free(out);
    free(err);
    struct fake fk;
    fake_start_lib(&fk, "ok", lib);
    assert_int_equal(cli(&out, &err, "--heap", fk.pid, NULL), 0);
    char want[300];
    expect_text(want, sizeof(want), "libfakeheap.so", &xs(&fk, "jni")->f[0]);
    strcat(want, "\n");
    if (!strstr(out, want)) fail_msg("stripped library: %s missing in\n%s", want, out);
    expect_text(want, sizeof(want), "libfakeheap.so", &xs(&fk, "cpp")->f[0]);
    assert_non_null(strstr(out, want));
    assert_null(strstr(out, "(fake_heap_lib.c:"));
    free(out);
    free(err);
    child_stop(&fk.c);
    unlink(lib);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_names, children_teardown),
        cmocka_unit_test_teardown(test_header_check, children_teardown),
        cmocka_unit_test_teardown(test_sym_kinds, children_teardown),
        cmocka_unit_test_teardown(test_top_stacks, children_teardown),
        cmocka_unit_test_teardown(test_json, children_teardown),
        cmocka_unit_test_teardown(test_collapsed, children_teardown),
        cmocka_unit_test_teardown(test_pprof, children_teardown),
        cmocka_unit_test_teardown(test_baseline_diff, children_teardown),
        cmocka_unit_test_teardown(test_watch, children_teardown),
        cmocka_unit_test_teardown(test_refused, children_teardown),
        cmocka_unit_test_teardown(test_busy, children_teardown),
        cmocka_unit_test_teardown(test_full_and_stats, children_teardown),
        cmocka_unit_test_teardown(test_stripped, children_teardown),
        cmocka_unit_test_teardown(test_garbage, children_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
