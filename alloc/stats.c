/* stats.c: where the memory is.
 *
 * Every byte ebbmalloc holds from the kernel is in exactly one place:
 *   page heap: free resident (page_free) or free released (released), or handed out as
 *   a span; a SMALL span's bytes are objects with the program (in_use), objects in
 *   thread caches (thread_cache), or free objects, transfer-cache batches, uncarved
 *   objects and the span's unusable tail (central); LARGE and MAPPED spans are in_use.
 *   Metadata is ebbmalloc's own records.
 * So resident = in_use + thread_cache + central + page_free + metadata and
 * mapped = resident + released, by construction; the tests check the parts against
 * what the program allocated and against the kernel's resident set. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct class_totals {
    size_t span_bytes, free_bytes, tail_released;
    size_t free_count[EBB_NCLASS];
};

static void central_totals(struct class_totals *t) {
    memset(t, 0, sizeof *t);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        struct ebb_central *ce = &ebbi_central[c];
        const struct ebb_class_info *ci = &ebbi_classes[c];
        ebbi_lock(&ce->lock);
        size_t spans = ce->spans;
        size_t free_obj = ce->free_objects + ce->tc_objects;
        size_t tails = ce->tail_released;
        ebbi_unlock(&ce->lock);
        t->tail_released += tails;
        size_t sb = spans * ci->pages * EBB_PAGE;
        t->span_bytes += sb;
        /* free objects plus each span's tail that holds no object */
        t->free_bytes += free_obj * ci->size + (sb - spans * ebbi_class_objects(c) * ci->size);
        t->free_count[c] = free_obj;
    }
}

EBB_EXPORT void ebb_stats(struct ebb_stats *st) {
    memset(st, 0, sizeof *st);
    if (atomic_load(&ebbi_init_state) != 2) return;
    struct ebb_page_heap_stats ph;
    struct class_totals ct;
    size_t threads;
    central_totals(&ct);
    size_t tc = ebbi_tc_cached_bytes(&threads);
    ebbi_page_heap_stats(&ph);
    size_t spans_out = ph.mapped - ph.free_res - ph.released; /* SMALL + LARGE + MAPPED */
    size_t small = ct.span_bytes < spans_out ? ct.span_bytes : spans_out;
    size_t large = spans_out - small;
    size_t central = ct.free_bytes < small ? ct.free_bytes : small;
    if (tc > small - central) tc = small - central; /* racy reads: keep the parts consistent */
    st->in_use = small - central - tc + large;
    st->thread_cache = tc;
    /* released tails of free objects are out of the resident set */
    size_t tails = ct.tail_released < central ? ct.tail_released : central;
    st->central = central - tails;
    st->page_free = ph.free_res;
    st->released = ph.released + tails;
    st->metadata = ebbi_meta_bytes() + ebbi_pm_bytes(ph.mapped);
    st->resident = st->in_use + st->thread_cache + st->central + st->page_free + st->metadata;
    st->mapped = st->resident + st->released;
    st->peak_in_use = ph.peak_used > st->in_use ? ph.peak_used : st->in_use;
    st->threads = threads;
    st->release_calls = ph.release_calls;
    st->released_total = ph.released_total;
    st->cgroup_limit = ebbi_cgroup_limit();
    st->soft_limit = ebbi_soft_limit();
    st->idle_caches_emptied = ebbi_tc_idle_emptied();
}

/* ---------------------------------------------------------------- glibc's reports */
EBB_EXPORT struct mallinfo2 ebb_mallinfo2(void) {
    struct ebb_stats st;
    struct ebb_page_heap_stats ph;
    ebb_stats(&st);
    ebbi_page_heap_stats(&ph);
    struct mallinfo2 mi = {0};
    mi.arena = st.mapped - ph.mapped_direct;
    mi.ordblks = 1;
    mi.hblks = ph.mapped_count;
    mi.hblkhd = ph.mapped_direct;
    mi.usmblks = 0;
    mi.fsmblks = st.thread_cache + st.central;
    mi.uordblks = st.in_use;
    mi.fordblks = st.thread_cache + st.central + st.page_free;
    mi.keepcost = st.page_free;
    return mi;
}

static int clamp_int(size_t v) { return v > INT32_MAX ? INT32_MAX : (int)v; }

EBB_EXPORT struct mallinfo ebb_mallinfo(void) {
    struct mallinfo2 m2 = ebb_mallinfo2();
    struct mallinfo mi = {0};
    mi.arena = clamp_int(m2.arena);
    mi.ordblks = clamp_int(m2.ordblks);
    mi.hblks = clamp_int(m2.hblks);
    mi.hblkhd = clamp_int(m2.hblkhd);
    mi.fsmblks = clamp_int(m2.fsmblks);
    mi.uordblks = clamp_int(m2.uordblks);
    mi.fordblks = clamp_int(m2.fordblks);
    mi.keepcost = clamp_int(m2.keepcost);
    return mi;
}

static size_t line(char *b, size_t n, const char *label, size_t v) {
    char num[32];
    int l = ebbi_snprintf(num, sizeof num, "%zu", v);
    size_t o = (size_t)ebbi_snprintf(b, n, "%s= ", label);
    for (int i = l; i < 10 && o + 1 < n; i++) b[o++] = ' ';
    o += (size_t)ebbi_snprintf(b + o, n - o, "%s\n", num);
    return o;
}

/* glibc's fields (one "arena": ebbmalloc has none), then ebbmalloc's breakdown.  Written
 * without stdio so it works anywhere, even at exit. */
static void stats_report(int fd) {
    struct ebb_stats st;
    struct ebb_page_heap_stats ph;
    ebb_stats(&st);
    ebbi_page_heap_stats(&ph);
    char b[2048];
    size_t o = 0, n = sizeof b;
    o += (size_t)ebbi_snprintf(b + o, n - o, "Arena 0:\n");
    o += line(b + o, n - o, "system bytes     ", st.resident);
    o += line(b + o, n - o, "in use bytes     ", st.in_use);
    o += (size_t)ebbi_snprintf(b + o, n - o, "Total (incl. mmap):\n");
    o += line(b + o, n - o, "system bytes     ", st.resident);
    o += line(b + o, n - o, "in use bytes     ", st.in_use);
    o += line(b + o, n - o, "max mmap regions ", ph.mapped_count);
    o += line(b + o, n - o, "max mmap bytes   ", ph.mapped_direct);
    o += (size_t)ebbi_snprintf(b + o, n - o, "ebbmalloc %s:\n", ebb_version());
    o += line(b + o, n - o, "in use           ", st.in_use);
    o += line(b + o, n - o, "thread caches    ", st.thread_cache);
    o += line(b + o, n - o, "central          ", st.central);
    o += line(b + o, n - o, "free resident    ", st.page_free);
    o += line(b + o, n - o, "metadata         ", st.metadata);
    o += line(b + o, n - o, "resident         ", st.resident);
    o += line(b + o, n - o, "released         ", st.released);
    o += line(b + o, n - o, "mapped           ", st.mapped);
    o += line(b + o, n - o, "peak in use      ", st.peak_in_use);
    o += line(b + o, n - o, "threads          ", st.threads);
    o += line(b + o, n - o, "release calls    ", st.release_calls);
    o += line(b + o, n - o, "released total   ", st.released_total);
    o += line(b + o, n - o, "cgroup limit     ", st.cgroup_limit);
    o += line(b + o, n - o, "soft limit       ", st.soft_limit);
    o += line(b + o, n - o, "cgroup cpus x100 ", (size_t)(ebbi_cgroup_cpus() * 100));
    ebbi_write_fd(fd, b, o);
}

EBB_EXPORT void ebb_malloc_stats(void) { stats_report(2); }

/* EBB_STATS=1: the report at exit goes to a copy of stderr taken at start, because many
 * programs close stderr on their way out (coreutils do). */
static int exit_fd = 2;
void ebbi_stats_init(void) {
    if (!ebbi_opt(EBB_OPT_STATS)) return;
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
    if (fd >= 0) exit_fd = fd;
}

EBB_EXPORT int ebb_malloc_info(int options, FILE *fp) {
    if (options != 0) {
        errno = EINVAL;
        return -1;
    }
    struct ebb_stats st;
    struct class_totals ct;
    struct ebb_page_heap_stats ph;
    ebb_stats(&st);
    central_totals(&ct);
    ebbi_page_heap_stats(&ph);
    size_t free_count = 0;
    fputs("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", fp);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        if (!ct.free_count[c]) continue;
        size_t sz = ebbi_classes[c].size;
        fprintf(fp, "  <size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\"/>\n",
                (size_t)ebbi_classes[c - 1].size + 1, sz, sz * ct.free_count[c], ct.free_count[c]);
        free_count += ct.free_count[c];
    }
    fputs("</sizes>\n", fp);
    fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
    fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", free_count,
            (size_t)(st.central + st.page_free));
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", (size_t)st.resident);
    fprintf(fp, "<system type=\"max\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fputs("</heap>\n", fp);
    fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
    fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", free_count,
            (size_t)(st.central + st.page_free));
    fprintf(fp, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", ph.mapped_count,
            ph.mapped_direct);
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", (size_t)st.resident);
    fprintf(fp, "<system type=\"max\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp,
            "<ebbmalloc in_use=\"%llu\" thread_cache=\"%llu\" central=\"%llu\" page_free=\"%llu\" "
            "released=\"%llu\" metadata=\"%llu\" resident=\"%llu\" mapped=\"%llu\" threads=\"%llu\"/>\n",
            (unsigned long long)st.in_use, (unsigned long long)st.thread_cache,
            (unsigned long long)st.central, (unsigned long long)st.page_free,
            (unsigned long long)st.released, (unsigned long long)st.metadata,
            (unsigned long long)st.resident, (unsigned long long)st.mapped,
            (unsigned long long)st.threads);
    fputs("</malloc>\n", fp);
    return 0;
}

/* EBB_STATS=2: also one line per size class that holds memory. */
static void class_report(int fd) {
    char b[160];
    int n = ebbi_snprintf(b, sizeof b, "class     size  spans  span-bytes  free-objects  in-transfer\n");
    ebbi_write_fd(fd, b, (size_t)n);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        struct ebb_central *ce = &ebbi_central[c];
        ebbi_lock(&ce->lock);
        size_t spans = ce->spans, fo = ce->free_objects, tco = ce->tc_objects;
        ebbi_unlock(&ce->lock);
        if (!spans) continue;
        n = ebbi_snprintf(b, sizeof b, "%u %zu %zu %zu %zu %zu\n", c, (size_t)ebbi_classes[c].size, spans,
                          spans * ebbi_classes[c].pages * EBB_PAGE, fo, tco);
        ebbi_write_fd(fd, b, (size_t)n);
    }
}

void ebbi_stats_at_exit(void) {
    stats_report(exit_fd);
    if (ebbi_opt(EBB_OPT_STATS) >= 2) class_report(exit_fd);
}

/* ---------------------------------------------------------------- live stats page */
static struct ebb_shm_page *shm_page;
static char shm_path[64];
static _Atomic int shm_failed;

static uint64_t self_start_time(void) {
    char buf[1024];
    if (!ebbi_read_file("/proc/self/stat", buf, sizeof buf)) return 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    /* ") " ends field 2; each further space starts the next field: stop at field 22 */
    for (int field = 2; field < 22 && p; field++) p = strchr(p + 1, ' ');
    if (!p) return 0;
    uint64_t v = 0;
    for (p++; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

/* Pages of processes that died without unlinking theirs (killed) are removed when a
 * process creates its own, so that /dev/shm does not fill up.  getdents64 directly: no
 * allocation. */
static void shm_remove_stale(void) {
    int dfd = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    char buf[4096];
    long n;
    while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(buf + off);
            off += d->reclen;
            if (strncmp(d->name, "ebbmalloc.", 10)) continue;
            char *e;
            long pid = strtol(d->name + 10, &e, 10);
            if (*e || pid <= 0) continue;
            if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) unlinkat(dfd, d->name, 0);
        }
    }
    close(dfd);
}

static bool shm_create(void) {
    shm_remove_stale();
    int pid = getpid();
    ebbi_snprintf(shm_path, sizeof shm_path, "/dev/shm/ebbmalloc.%d", pid);
    int fd = open(shm_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) { /* left by a dead process that had this pid */
        unlink(shm_path);
        fd = open(shm_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
    if (fd < 0) return false;
    void *p = MAP_FAILED;
    if (ftruncate(fd, 4096) == 0) p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        unlink(shm_path);
        return false;
    }
    struct ebb_shm_page *pg = p;
    pg->version = EBB_SHM_VERSION;
    pg->size = sizeof *pg;
    pg->pid = pid;
    pg->start_time = self_start_time();
    atomic_thread_fence(memory_order_release);
    pg->magic = EBB_SHM_MAGIC;
    shm_page = pg;
    return true;
}

void ebbi_shm_publish(void) {
    if (!ebbi_opt(EBB_OPT_STATS_SHM) || atomic_load(&shm_failed)) return;
    int saved = errno;
    if (!shm_page && !shm_create()) {
        atomic_store(&shm_failed, 1);
        errno = saved;
        return;
    }
    struct ebb_stats st;
    ebb_stats(&st);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    __atomic_add_fetch(&shm_page->seq, 1, __ATOMIC_ACQ_REL); /* odd: writing */
    shm_page->stats = st;
    shm_page->updated_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    __atomic_add_fetch(&shm_page->seq, 1, __ATOMIC_ACQ_REL); /* even: done */
    errno = saved;
}

void ebbi_shm_fork_child(void) {
    /* The parent's page is shared with us: let go of it; the child makes its own. */
    if (shm_page) munmap(shm_page, 4096);
    shm_page = NULL;
    atomic_store(&shm_failed, 0);
}

void ebbi_shm_unlink(void) {
    if (shm_page && shm_page->pid == getpid()) unlink(shm_path);
}

#if EBB_OVERRIDE
struct mallinfo2 mallinfo2(void) __attribute__((alias("ebb_mallinfo2"), visibility("default")));
struct mallinfo mallinfo(void) __attribute__((alias("ebb_mallinfo"), visibility("default")));
void malloc_stats(void) __attribute__((alias("ebb_malloc_stats"), visibility("default")));
int malloc_info(int, FILE *) __attribute__((alias("ebb_malloc_info"), visibility("default")));
#endif
