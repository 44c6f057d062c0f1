/* Test helper for ebb-inspect --heap: publishes a heap profile the way the library does
 * (the stats page's name plus ".heap", mapped MAP_SHARED, the layout of
 * include/ebbmalloc.h), correct or broken on purpose, with known stacks whose frames are
 * real return addresses: in LIBRARY (libfakeheap.so, dlopened, built -O2
 * -fomit-frame-pointer), in libc, in this program, and in anonymous memory standing for
 * JIT-compiled code.
 *
 *   fake-heap-prof MODE LIBRARY
 *
 * It prints each stack and what its frames are ("stack NAME LIVE OBJECTS" and
 * "frame NAME INDEX 0xADDRESS 0xOFFSET FUNCTION", FUNCTION "-" where it cannot know, the
 * offset from the function's start to the return address), then "ready",
 * and waits.  SIGUSR1: the stack "jni" grows by 8 MiB (512 objects), "big" shrinks by
 * 4 MiB, and it prints "grew N".  SIGTERM removes the file.
 *
 * MODE: ok          the table below
 *       stale       the file exists with valid contents, but the process does not map it
 *       badmagic    not an ebbmalloc heap profile
 *       wrongpid    the header names another pid
 *       wrongstart  the header carries another start_time
 *       badslot     a slot's frames run past the frames area
 *       baddepth    a slot claims 65 frames
 *       badlayout   the frames area runs past the end of the file
 *       full        as ok, with 7 samples dropped (table full)
 *       withstats   as ok, and a valid stats page mapped before the profile (so the
 *                   profile, mapped lower, comes first in the maps)
 *       garbage     a valid header over random slots and frames (seeded by the pid):
 *                   depths 0..64 and first indices inside the frames area, counters and
 *                   addresses random, some of them inside this process's mappings
 *       garbagebad  the same, with one slot whose depth or frames are out of range
 *       busy        as ok, while a thread republishes one more slot all the time,
 *                   alternating between two stacks ("toggle": big+helper, or
 *                   cpp+helper+jit), and rewrites the counters of "exe"
 *
 * The stacks (live bytes, objects; innermost frame first):
 *   jni    48 MiB  3072  Java_org_ebbmalloc_fake_Native_grow, jit, jit
 *   big    24 MiB   384  fake_leak_big, this program
 *   cpp    12 MiB  3072  ebbtest::Cache::fill(void (*)(), unsigned long), this program
 *   libc    6 MiB  1536  libc (qsort calling back), fake_sort_site, this program
 *   exe     3 MiB   768  noise_site (this program), this program
 *   jitc    1 MiB   256  libc (qsort), jit
 *   freed   0       0    fake_leak_big, this program (all freed: 10 MiB allocated in total)
 * and one slot whose hash is set but depth is 0 (being written), counters non-zero. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ebbmalloc.h"
#include "fake_publish.h"

#define MIB ((int64_t)1 << 20)
#define SLOTS 64u
#define FRAMES_CAP 1024u
#define HEADER_SIZE 128u /* more than the header: a reader must use header_size */

static char path[300], stats_path[300];
static unsigned char *map;
static size_t map_size;
static volatile sig_atomic_t grown;

struct fstack {
    const char *name;
    uint32_t slot, depth;
    uint64_t frames[8];
    const char *func[8];
    uint64_t off[8];
    int64_t live, objects;
    uint64_t total, total_objects;
};

enum { S_JNI, S_BIG, S_CPP, S_LIBC, S_EXE, S_JITC, S_FREED, NSTACKS };
static struct fstack st[NSTACKS];

static uintptr_t last_ra, libc_ra;

static __attribute__((noinline)) void record(void) {
    last_ra = (uintptr_t)__builtin_return_address(0);
    __asm__ volatile("" ::: "memory");
}

static __attribute__((noinline)) int record_cmp(const void *a, const void *b) {
    libc_ra = (uintptr_t)__builtin_return_address(0);
    return *(const int *)a - *(const int *)b;
}

static __attribute__((noinline)) uintptr_t noise_site(void) {
    record();
    __asm__ volatile("" ::: "memory");
    return (uintptr_t)__builtin_return_address(0);
}

static void on_term(int sig) {
    (void)sig;
    unlink(path);
    if (stats_path[0]) unlink(stats_path);
    _exit(0);
}

static struct ebb_prof_header *hdr(void) { return (struct ebb_prof_header *)(void *)map; }

static struct ebb_prof_slot *slot(uint32_t i) {
    return (struct ebb_prof_slot *)(void *)(map + HEADER_SIZE + i * sizeof(struct ebb_prof_slot));
}

static uint64_t *frames(void) { return (uint64_t *)(void *)(map + hdr()->frames_offset); }

static void on_usr1(int sig) {
    (void)sig;
    struct ebb_prof_slot *j = slot(st[S_JNI].slot), *b = slot(st[S_BIG].slot);
    __atomic_store_n(&j->live_bytes, j->live_bytes + 8 * MIB, __ATOMIC_RELAXED);
    __atomic_store_n(&j->live_objects, j->live_objects + 512, __ATOMIC_RELAXED);
    __atomic_store_n(&j->total_bytes, j->total_bytes + 8 * MIB, __ATOMIC_RELAXED);
    __atomic_store_n(&j->total_objects, j->total_objects + 512, __ATOMIC_RELAXED);
    __atomic_store_n(&b->live_bytes, b->live_bytes - 4 * MIB, __ATOMIC_RELAXED);
    __atomic_store_n(&b->live_objects, b->live_objects - 64, __ATOMIC_RELAXED);
    __atomic_store_n(&hdr()->updated_ms, fake_now_ms(), __ATOMIC_RELAXED);
    char msg[32];
    int n = snprintf(msg, sizeof(msg), "grew %d\n", (int)++grown);
    if (write(1, msg, (size_t)n) < 0) _exit(1);
}

/* A valid stats page, as tools/helpers/fake_stats_page.c makes it. */
static void stats_page(void) {
    snprintf(stats_path, sizeof(stats_path), "/dev/shm/ebbmalloc.%llu.%d", fake_pid_ns(), (int)getpid());
    int fd;
    struct ebb_shm_page *pg = fake_map_file(stats_path, 4096, &fd);
    close(fd);
    fake_stats_header(pg);
    struct ebb_stats *t = &pg->stats;
    t->in_use = 90u << 20;
    t->metadata = 1u << 20;
    t->resident = t->in_use + t->metadata;
    t->mapped = t->resident;
    t->peak_in_use = t->in_use;
    pg->updated_ms = fake_now_ms();
}

static void *need(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "fake-heap-prof: %s: %s\n", name, dlerror());
        exit(1);
    }
    return p;
}

static void set(struct fstack *s, const char *name, uint32_t sl, int64_t live, int64_t objs, uint64_t total,
                uint64_t tobjs) {
    s->name = name;
    s->slot = sl;
    s->live = live;
    s->objects = objs;
    s->total = total;
    s->total_objects = tobjs;
}

static void frame(struct fstack *s, uint64_t pc, const char *func, uint64_t start) {
    s->frames[s->depth] = pc;
    s->func[s->depth] = func;
    s->off[s->depth] = func ? pc - start : 0;
    s->depth++;
}

/* Call every site once, so each frame is the return address of a real call. */
static __attribute__((noinline)) void build(void *lib, uint64_t jit) {
    uintptr_t (*big)(void (*)(void)) = (uintptr_t(*)(void (*)(void)))need(lib, "fake_leak_big");
    uintptr_t (*jni)(void *, void *, void (*)(void)) =
        (uintptr_t(*)(void *, void *, void (*)(void)))need(lib, "Java_org_ebbmalloc_fake_Native_grow");
    uintptr_t (*sort)(void (*)(void), int (*)(const void *, const void *)) =
        (uintptr_t(*)(void (*)(void), int (*)(const void *, const void *)))need(lib, "fake_sort_site");
    void *(*cpp_addr)(void) = (void *(*)(void))need(lib, "fake_cpp_fill_address");
    uintptr_t (*fill)(void (*)(void), unsigned long) =
        (uintptr_t(*)(void (*)(void), unsigned long))cpp_addr();

    struct fstack *s = &st[S_JNI];
    set(s, "jni", 5, 48 * MIB, 3072, 56 * MIB, 3584);
    jni(NULL, NULL, record);
    frame(s, last_ra, "Java_org_ebbmalloc_fake_Native_grow", (uint64_t)(uintptr_t)jni);
    frame(s, jit + 0x100, NULL, 0);
    frame(s, jit + 0x2200, NULL, 0);

    s = &st[S_BIG];
    set(s, "big", 17, 24 * MIB, 384, 24 * MIB, 384);
    uintptr_t r = big(record);
    frame(s, last_ra, "fake_leak_big", (uint64_t)(uintptr_t)big);
    frame(s, r, NULL, 0);

    s = &st[S_CPP];
    set(s, "cpp", 40, 12 * MIB, 3072, 12 * MIB, 3072);
    r = fill(record, 1);
    frame(s, last_ra, "ebbtest::Cache::fill(void (*)(), unsigned long)", (uint64_t)(uintptr_t)fill);
    frame(s, r, NULL, 0);

    s = &st[S_LIBC];
    set(s, "libc", 41, 6 * MIB, 1536, 6 * MIB, 1536);
    r = sort(record, record_cmp);
    frame(s, libc_ra, NULL, 0);
    frame(s, last_ra, "fake_sort_site", (uint64_t)(uintptr_t)sort);
    frame(s, r, NULL, 0);

    s = &st[S_EXE];
    set(s, "exe", 63, 3 * MIB, 768, 3 * MIB, 768);
    r = noise_site();
    frame(s, last_ra, "noise_site", (uint64_t)(uintptr_t)noise_site);
    frame(s, r, NULL, 0);

    s = &st[S_JITC];
    set(s, "jitc", 0, 1 * MIB, 256, 1 * MIB, 256);
    frame(s, libc_ra, NULL, 0);
    frame(s, jit + 0x3300, NULL, 0);

    s = &st[S_FREED];
    set(s, "freed", 30, 0, 0, 10 * MIB, 640);
    r = big(record);
    frame(s, last_ra, "fake_leak_big", (uint64_t)(uintptr_t)big);
    frame(s, r, NULL, 0);
}

static uint32_t frames_next;

static void publish(const struct fstack *s) {
    struct ebb_prof_slot *sl = slot(s->slot);
    uint32_t first = frames_next;
    for (uint32_t k = 0; k < s->depth; k++) frames()[first + k] = s->frames[k];
    frames_next += s->depth;
    sl->hash = 0x9e3779b97f4a7c15ull * (s->slot + 1);
    sl->first = first;
    sl->live_bytes = s->live;
    sl->live_objects = s->objects;
    sl->total_bytes = s->total;
    sl->total_objects = s->total_objects;
    __atomic_store_n(&sl->depth, s->depth, __ATOMIC_RELEASE);
    hdr()->frames_used = frames_next;
}

/* busy: one slot republished all the time as one of two stacks whose frames stay put. */
static uint32_t toggle_first[2], toggle_depth[2];
static void *toggler(void *arg) {
    (void)arg;
    struct ebb_prof_slot *sl = slot(50), *ex = slot(st[S_EXE].slot);
    for (uint64_t k = 0;; k++) {
        int w = (int)(k & 1);
        __atomic_store_n(&sl->depth, 0, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        __atomic_store_n(&sl->first, toggle_first[w], __ATOMIC_RELAXED);
        __atomic_store_n(&sl->hash, 0x1234 + (uint64_t)w, __ATOMIC_RELAXED);
        __atomic_store_n(&sl->live_bytes, MIB, __ATOMIC_RELAXED);
        __atomic_store_n(&sl->live_objects, 64, __ATOMIC_RELAXED);
        __atomic_store_n(&sl->depth, toggle_depth[w], __ATOMIC_RELEASE);
        /* counters move as they do under a running program */
        __atomic_store_n(&ex->total_bytes, (uint64_t)(3 * MIB) + (k & 0xffff) * 4096, __ATOMIC_RELAXED);
        if (k % 64 == 0) usleep(10);
    }
    return NULL;
}

/* The table file, named as the library names it (its stats page's name plus ".heap"),
 * with the valid header and the stacks published.  Returns its descriptor. */
static int publish_table(void) {
    snprintf(path, sizeof(path), "/dev/shm/ebbmalloc.%llu.%d.heap", fake_pid_ns(), (int)getpid());
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    uint64_t frames_offset = HEADER_SIZE + SLOTS * sizeof(struct ebb_prof_slot);
    frames_offset = (frames_offset + 63) & ~(uint64_t)63;
    map_size = frames_offset + FRAMES_CAP * 8;
    int fd;
    map = fake_map_file(path, map_size, &fd);
    struct ebb_prof_header *h = hdr();
    h->magic = EBB_PROF_MAGIC;
    h->version = EBB_PROF_VERSION;
    h->header_size = HEADER_SIZE;
    h->pid = getpid();
    h->slot_count = SLOTS;
    h->start_time = fake_start_time();
    h->sample_interval = 512 << 10;
    h->frames_offset = frames_offset;
    h->frames_cap = FRAMES_CAP;
    h->samples = 200;
    h->updated_ms = fake_now_ms();
    for (int i = 0; i < NSTACKS; i++) publish(&st[i]);
    /* a slot being written: hash set, depth still 0, counters already moving */
    slot(22)->hash = 77;
    slot(22)->first = 3;
    slot(22)->live_bytes = 99 * MIB;
    slot(22)->live_objects = 5;
    return fd;
}

/* busy: the two stacks the toggler alternates between, and the toggler. */
static void start_toggler(uint64_t jit) {
    const struct fstack *a = &st[S_BIG], *c = &st[S_CPP];
    toggle_first[0] = frames_next;
    toggle_depth[0] = 2;
    frames()[frames_next++] = a->frames[0];
    frames()[frames_next++] = a->frames[1];
    toggle_first[1] = frames_next;
    toggle_depth[1] = 3;
    frames()[frames_next++] = c->frames[0];
    frames()[frames_next++] = c->frames[1];
    frames()[frames_next++] = jit + 0x4400;
    hdr()->frames_used = frames_next;
    pthread_t t;
    pthread_create(&t, NULL, toggler, NULL);
}

/* garbage, garbagebad: random slots and frames over the valid header. */
static void fill_garbage(uint64_t jit, bool one_bad) {
    srandom((unsigned)getpid());
    uint64_t here[] = {st[S_BIG].frames[0], st[S_EXE].frames[0], st[S_LIBC].frames[0], jit};
    for (uint32_t i = 0; i < FRAMES_CAP; i++) {
        uint64_t r = (uint64_t)random() << 33 ^ (uint64_t)random() << 2 ^ (uint64_t)random();
        frames()[i] = random() % 2 ? here[random() % 4] + (r & 0xfff) : r;
    }
    for (uint32_t i = 0; i < SLOTS; i++) {
        struct ebb_prof_slot *sl = slot(i);
        uint32_t depth = random() % 8 ? (uint32_t)(random() % 8) : (uint32_t)(random() % 65);
        sl->hash = (uint64_t)random();
        sl->first = (uint32_t)(random() % (FRAMES_CAP - depth + 1));
        sl->live_bytes = (int64_t)((uint64_t)random() << 32 ^ (uint64_t)random());
        sl->live_objects = random() % 3 ? random() : -random();
        sl->total_bytes = (uint64_t)random() << 20;
        sl->total_objects = (uint64_t)random();
        sl->depth = depth;
    }
    if (one_bad) {
        /* one slot out of range, the rest as above */
        struct ebb_prof_slot *sl = slot((uint32_t)random() % SLOTS);
        if (random() % 2) {
            sl->depth = EBB_PROF_MAX_FRAMES + 1 + (uint32_t)(random() % 6);
        } else {
            sl->depth = 1 + (uint32_t)(random() % 8);
            sl->first = FRAMES_CAP - sl->depth + 1 + (uint32_t)(random() % 8);
        }
    }
    hdr()->frames_used = (uint64_t)random();
    hdr()->dropped = (uint64_t)random() % 2;
}

/* The table made correct or broken as MODE says; false for an unknown mode. */
static bool apply_mode(const char *mode, uint64_t jit) {
    struct ebb_prof_header *h = hdr();
    if (!strcmp(mode, "stale")) {
        munmap(map, map_size);
    } else if (!strcmp(mode, "badmagic")) {
        h->magic ^= 1;
    } else if (!strcmp(mode, "wrongpid")) {
        h->pid = getpid() + 1;
    } else if (!strcmp(mode, "wrongstart")) {
        h->start_time += 1;
    } else if (!strcmp(mode, "badslot")) {
        slot(9)->first = FRAMES_CAP - 1;
        slot(9)->hash = 5;
        __atomic_store_n(&slot(9)->depth, 3, __ATOMIC_RELEASE);
    } else if (!strcmp(mode, "baddepth")) {
        slot(9)->first = 0;
        slot(9)->hash = 5;
        __atomic_store_n(&slot(9)->depth, EBB_PROF_MAX_FRAMES + 1, __ATOMIC_RELEASE);
    } else if (!strcmp(mode, "badlayout")) {
        h->frames_cap = FRAMES_CAP + 1;
    } else if (!strcmp(mode, "full")) {
        h->dropped = 7;
    } else if (!strcmp(mode, "busy")) {
        start_toggler(jit);
    } else if (!strcmp(mode, "garbage") || !strcmp(mode, "garbagebad")) {
        fill_garbage(jit, !strcmp(mode, "garbagebad"));
    } else if (strcmp(mode, "ok") && strcmp(mode, "withstats")) {
        return false;
    }
    return true;
}

/* What the test compares the reading with: each stack and its frames. */
static void print_stacks(void) {
    for (int i = 0; i < NSTACKS; i++) {
        const struct fstack *s = &st[i];
        printf("stack %s %lld %lld\n", s->name, (long long)s->live, (long long)s->objects);
        for (uint32_t k = 0; k < s->depth; k++)
            printf("frame %s %u 0x%llx 0x%llx %s\n", s->name, k, (unsigned long long)s->frames[k],
                   (unsigned long long)s->off[k], s->func[k] ? s->func[k] : "-");
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fake-heap-prof MODE LIBRARY\n");
        return 2;
    }
    const char *mode = argv[1];
    void *lib = dlopen(argv[2], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "fake-heap-prof: %s\n", dlerror());
        return 1;
    }
    uint64_t jit =
        (uint64_t)(uintptr_t)mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    build(lib, jit);

    if (!strcmp(mode, "withstats")) stats_page();
    int fd = publish_table();
    if (!apply_mode(mode, jit)) {
        fprintf(stderr, "fake-heap-prof: unknown mode %s\n", mode);
        unlink(path);
        return 2;
    }
    close(fd);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);

    print_stacks();
    fake_serve();
}
