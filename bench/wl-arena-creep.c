/* arena-creep: the field reports' scenario as a program.
 *
 * A pool of request-handler threads (default 8 x cores, glibc's arena cap) works
 * on per-handler working sets of mixed-size blocks (mostly small, some tens of
 * KiB, a few hundred KiB), every byte written.  Handlers retire after a while and
 * a new thread takes over the same working set, so blocks allocated by one thread
 * are freed by another; handlers also pass blocks to each other through
 * mailboxes, and now and then promote a block into a small process-wide set of
 * long-lived blocks (a cache).  Load moves between handlers: in each epoch (a
 * slice of the total work) a fixed number of handlers, chosen from the seed, are
 * busy (large working set, now and then a larger burst) and the rest are quiet
 * (small working set), so the live bytes stay about level while the busy role
 * wanders over the handlers.
 *
 * When every handler has done its share of the work, all handlers free their
 * working sets and park, so that only the long-lived set (~8 MiB) remains; the
 * program then idles to show what the allocator gives back.
 *
 * The sequence of sizes and decisions of each handler is a function of --seed,
 * the handler number and its generation only.
 *
 * With --duration-s the load runs for a fixed time instead of a fixed number of
 * operations; --long does that for 10 minutes with a long-lived set that is filled before
 * the load and then changes slowly (one promotion in 262144 operations), the pattern of
 * services that run for weeks.
 *
 * Under ebbmalloc (ebb_stats found with dlsym) it also reports ebbmalloc's own breakdown
 * of its memory ("ebbstats" lines): at the highest RSS the reporter saw during the load,
 * at the most live bytes it saw, 2 s after the load and at the end.
 *
 * Output follows the protocol in wl_common.h; the timed section is "load".
 */
#define _GNU_SOURCE
#include "wl_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sys/mman.h>

#include "ebbmalloc.h"

struct block {
    void *p;
    size_t size;
};

struct mailbox {
    pthread_mutex_t mu;
    struct block *ring;
    uint32_t head, count, cap;
    bool closed;
};

enum { SLOT_RUNNING, SLOT_RETIRED, SLOT_PARKED };

struct slot {
    _Alignas(64) _Atomic int64_t live; /* allocated minus freed by this slot's threads */
    struct block *ws;                  /* working set, ws_cap() entries */
    uint64_t ops;                      /* operations done, all generations together */
    uint32_t gen;
    uint32_t index;
    uint32_t n_cur; /* working-set entries in use now */
    int state;      /* under ctl.mu */
    pthread_t th;
    struct mailbox mb;
    uint64_t sent, received, kept;
};

static struct params {
    unsigned threads;
    uint64_t seed;
    uint64_t ops_per_slot; /* the load: operations per handler slot */
    uint64_t lifetime;     /* operations before a handler thread retires */
    uint64_t epoch;        /* operations per handler per busy/quiet epoch (on average) */
    uint32_t hot_blocks;   /* working-set entries of a busy handler (a usual burst) */
    uint32_t cold_blocks;  /* ... of a quiet one */
    uint32_t hot_one_in;   /* 1 in N handlers is busy in an epoch */
    uint32_t send_one_in;  /* 1 in N operations also sends a block to another handler */
    uint64_t keep_one_in;  /* 1 in N operations also promotes a block to the long-lived set */
    uint64_t keep_bytes;   /* size of the long-lived set */
    bool prefill_keep;     /* fill the long-lived set before the load starts */
    uint64_t duration_ms;  /* the load runs this long (ops_per_slot ignored); 0: by ops */
    uint64_t idle_ms;
    uint64_t report_ms;
    bool sync;
} P;

static struct slot *slots;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* main waits here for retired/parked slots */
    pthread_cond_t exit_cv; /* parked handlers wait here */
    bool exit_now;
} ctl = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, false};

static struct {
    pthread_mutex_t mu;
    struct block *b;
    uint32_t count, cap;
    uint64_t bytes;
} keep = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0};

static atomic_bool reporter_stop;
static atomic_bool load_stop; /* duration mode: the time is up, handlers park */

/* Bookkeeping lives outside the allocator under test, in one mapping cut into
 * page-aligned pieces, so that what of it is resident can be told apart from the
 * allocator's memory in the breakdown (own_resident_kib). */
static struct {
    char *base;
    size_t len, used;
} own;

static size_t page_round(size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

static void own_map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    own.base = p;
    own.len = bytes;
}

static void *xmap(size_t bytes) {
    bytes = page_round(bytes);
    if (own.len - own.used < bytes) {
        fprintf(stderr, "arena-creep: bookkeeping mapping too small\n");
        exit(1);
    }
    void *p = own.base + own.used;
    own.used += bytes;
    return p;
}

/* The resident part of the bookkeeping, by mincore: the same under every allocator, and
 * part of what the breakdown shows outside ebbmalloc. */
static uint64_t own_resident_kib(void) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), pages = own.len / pg, res = 0;
    unsigned char vec[1024];
    for (size_t i = 0; i < pages; i += sizeof vec) {
        size_t n = pages - i < sizeof vec ? pages - i : sizeof vec;
        if (mincore(own.base + i * pg, n * pg, vec)) return 0;
        for (size_t j = 0; j < n; j++) res += vec[j] & 1;
    }
    return (uint64_t)(res * pg / 1024);
}

/* Mostly small, some tens of KiB, a few hundred KiB. */
static size_t pick_size(struct wl_rng *r) {
    uint64_t x = wl_rand(r);
    uint32_t k = (uint32_t)(x % 1000);
    uint64_t y = x >> 16;
    if (k < 900) { /* 16 B .. 1 KiB, log-uniform */
        size_t base = (size_t)16 << (y % 6);
        return base + (size_t)((y >> 8) % base);
    }
    if (k < 990) { /* 4 KiB .. 64 KiB, log-uniform */
        size_t base = (size_t)4096 << (y % 4);
        return base + (size_t)((y >> 8) % base);
    }
    return 96 * 1024 + (size_t)((y >> 8) % (544 * 1024)); /* 96 KiB .. 640 KiB */
}

/* Peak live bytes, exact to +-1 MiB.  Live bytes swing by tens of MiB between the
 * reporter's 20 ms samples, so the sampled maximum understates the peak (while the
 * kernel's maxrss is exact).  Each thread adds its changes into one global count in
 * steps of at most LIVE_STEP bytes (16 threads x 64 KiB of error at most), which
 * keeps the shared cache line out of most operations, and the global count's
 * maximum is kept. */
#define LIVE_STEP (64 * 1024)
static _Atomic int64_t live_global, live_peak;
static __thread int64_t live_pending;

static void live_flush(void) {
    int64_t v = atomic_fetch_add_explicit(&live_global, live_pending, memory_order_relaxed) + live_pending;
    live_pending = 0;
    int64_t p = atomic_load_explicit(&live_peak, memory_order_relaxed);
    while (v > p && !atomic_compare_exchange_weak(&live_peak, &p, v)) {}
}

static void live_add(int64_t d) {
    live_pending += d;
    if (live_pending >= LIVE_STEP || live_pending <= -LIVE_STEP) live_flush();
}

static void *alloc_block(struct slot *s, size_t size, unsigned char fill) {
    void *p = malloc(size);
    if (!p) {
        fprintf(stderr, "arena-creep: malloc(%zu) failed\n", size);
        exit(1);
    }
    memset(p, fill, size); /* every allocated byte written */
    atomic_fetch_add_explicit(&s->live, (int64_t)size, memory_order_relaxed);
    live_add((int64_t)size);
    return p;
}

static void free_block(struct slot *s, struct block *b) {
    if (!b->p) return;
    free(b->p);
    atomic_fetch_sub_explicit(&s->live, (int64_t)b->size, memory_order_relaxed);
    live_add(-(int64_t)b->size);
    b->p = NULL;
    b->size = 0;
}

static bool mailbox_put(struct mailbox *mb, struct block b) {
    bool ok = false;
    pthread_mutex_lock(&mb->mu);
    if (!mb->closed && mb->count < mb->cap) {
        mb->ring[(mb->head + mb->count) % mb->cap] = b;
        mb->count++;
        ok = true;
    }
    pthread_mutex_unlock(&mb->mu);
    return ok;
}

/* Take what other handlers sent and put it into the working set (first n entries). */
static void mailbox_drain(struct slot *s, struct wl_rng *r, uint32_t n) {
    struct block got[64];
    uint32_t k = 0;
    pthread_mutex_lock(&s->mb.mu);
    while (s->mb.count && k < 64) {
        got[k++] = s->mb.ring[s->mb.head];
        s->mb.head = (s->mb.head + 1) % s->mb.cap;
        s->mb.count--;
    }
    pthread_mutex_unlock(&s->mb.mu);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = (uint32_t)wl_below(r, n);
        free_block(s, &s->ws[j]); /* often a block another thread allocated */
        s->ws[j] = got[i];
        s->received++;
    }
}

static void keep_insert(struct slot *s, struct wl_rng *r, struct block b) {
    pthread_mutex_lock(&keep.mu);
    while (keep.count && (keep.bytes + b.size > P.keep_bytes || keep.count == keep.cap)) {
        uint32_t j = (uint32_t)wl_below(r, keep.count);
        keep.bytes -= keep.b[j].size;
        free_block(s, &keep.b[j]);
        keep.b[j] = keep.b[--keep.count];
    }
    keep.b[keep.count++] = b;
    keep.bytes += b.size;
    pthread_mutex_unlock(&keep.mu);
}

/* Work done by all handlers together, in steps of 256 operations; it drives the
 * epochs so that every handler agrees on which ones are busy. */
static _Atomic uint64_t progress;

static uint64_t epoch_key(uint32_t slot, uint64_t epoch) {
    return wl_mix64(P.seed * 0x100000001b3ull ^ ((uint64_t)slot << 40) ^ epoch);
}

/* Bursts differ in size: most are the usual hot_blocks, some larger, now and
 * then three times as large.  Per mille: 600 x1, 250 x1.25, 100 x1.5, 40 x2, 10 x3.
 * The rare large bursts set new high-water marks in whichever arena serves them,
 * long after the usual ones have stopped doing so. */
static uint32_t burst_blocks(uint32_t slot, uint64_t epoch) {
    uint64_t k = wl_mix64(epoch_key(slot, epoch) ^ 0x6275727374ull) % 1000;
    uint64_t h = P.hot_blocks;
    if (k < 600) return (uint32_t)h;
    if (k < 850) return (uint32_t)(h + h / 4);
    if (k < 950) return (uint32_t)(h + h / 2);
    if (k < 990) return (uint32_t)(2 * h);
    return (uint32_t)(3 * h);
}

static uint32_t ws_cap(void) { return 3 * P.hot_blocks; }

/* Exactly threads / hot_one_in handlers are busy in each epoch: those whose key
 * ranks lowest. */
static bool epoch_is_hot(uint32_t slot, uint64_t epoch) {
    uint32_t busy = P.threads / P.hot_one_in;
    if (busy == 0) busy = 1;
    uint64_t mine = epoch_key(slot, epoch);
    uint32_t below = 0;
    for (uint32_t i = 0; i < P.threads; i++) {
        uint64_t k = epoch_key(i, epoch);
        if (k < mine || (k == mine && i < slot)) below++;
    }
    return below < busy;
}

static void park(struct slot *s) {
    pthread_mutex_lock(&s->mb.mu);
    s->mb.closed = true;
    pthread_mutex_unlock(&s->mb.mu);
    while (s->mb.count) {
        struct block b = s->mb.ring[s->mb.head];
        s->mb.head = (s->mb.head + 1) % s->mb.cap;
        s->mb.count--;
        free_block(s, &b);
    }
    for (uint32_t i = 0; i < s->n_cur; i++) free_block(s, &s->ws[i]);
    live_flush();

    pthread_mutex_lock(&ctl.mu);
    s->state = SLOT_PARKED;
    pthread_cond_signal(&ctl.cv);
    while (!ctl.exit_now) pthread_cond_wait(&ctl.exit_cv, &ctl.mu);
    pthread_mutex_unlock(&ctl.mu);
}

static void *handler(void *arg) {
    struct slot *s = arg;
    struct wl_rng r;
    wl_rng_seed(&r, P.seed, s->index, s->gen);
    uint64_t done = 0;
    uint64_t epoch = UINT64_MAX;
    uint32_t n = s->n_cur ? s->n_cur : P.cold_blocks;

    while (s->ops < P.ops_per_slot && done < P.lifetime) {
        if ((s->ops & 255) == 0) {
            if (atomic_load_explicit(&load_stop, memory_order_relaxed)) break;
            uint64_t e =
                atomic_fetch_add_explicit(&progress, 256, memory_order_relaxed) / (P.epoch * P.threads);
            if (e != epoch) {
                epoch = e;
                n = epoch_is_hot(s->index, e) ? burst_blocks(s->index, e) : P.cold_blocks;
            }
        }
        if (n < s->n_cur) /* the burst is over (or a smaller one follows) */
            for (uint32_t i = n; i < s->n_cur; i++) free_block(s, &s->ws[i]);
        s->n_cur = n;

        uint32_t i = (uint32_t)wl_below(&r, n);
        free_block(s, &s->ws[i]);
        size_t size = pick_size(&r);
        s->ws[i].p = alloc_block(s, size, (unsigned char)i);
        s->ws[i].size = size;

        uint64_t x = wl_rand(&r);
        if (P.threads > 1 && x % P.send_one_in == 0) {
            size_t ms = pick_size(&r);
            struct block b = {alloc_block(s, ms, 0x5a), ms};
            uint32_t to = (uint32_t)wl_below(&r, P.threads - 1);
            if (to >= s->index) to++;
            if (mailbox_put(&slots[to].mb, b)) s->sent++;
            else free_block(s, &b);
        }
        if ((x >> 20) % P.keep_one_in == 0) {
            size_t ks = pick_size(&r);
            struct block b = {alloc_block(s, ks, 0xa5), ks};
            keep_insert(s, &r, b);
            s->kept++;
        }
        if ((s->ops & 63) == 0) mailbox_drain(s, &r, n);
        s->ops++;
        done++;
    }

    live_flush();
    if (s->ops >= P.ops_per_slot || atomic_load_explicit(&load_stop, memory_order_relaxed)) {
        park(s);
        return NULL;
    }
    pthread_mutex_lock(&ctl.mu);
    s->state = SLOT_RETIRED;
    pthread_cond_signal(&ctl.cv);
    pthread_mutex_unlock(&ctl.mu);
    return NULL;
}

static int64_t live_now(void) {
    int64_t sum = 0;
    for (unsigned i = 0; i < P.threads; i++)
        sum += atomic_load_explicit(&slots[i].live, memory_order_relaxed);
    return sum < 0 ? 0 : sum;
}

/* ------------------------------------------------------------ ebbmalloc's breakdown */

/* ebb_stats of the preloaded ebbmalloc, NULL under any other allocator. */
static void (*ebb_stats_fn)(struct ebb_stats *);

struct snapshot {
    bool have;
    uint64_t rss_kib;
    uint64_t own_kib; /* of it, the workload's own bookkeeping */
    struct ebb_stats st;
};

static struct {
    pthread_mutex_t mu;
    struct snapshot peak; /* when RSS first came within 1% of its peak during the load */
    struct snapshot live; /* at the tick with the most live bytes during the load */
    int64_t live_max;     /* live bytes at that tick */
    atomic_bool in_load;
} snaps = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* VmRSS of this process from /proc/self/statm, without allocating. */
static uint64_t self_rss_kib(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    unsigned long long size = 0, resident = 0;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
    return resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

static struct snapshot take_snapshot(void) {
    struct snapshot sn = {true, self_rss_kib(), own_resident_kib(), {0}};
    ebb_stats_fn(&sn.st);
    return sn;
}

static void say_snapshot(const char *when, const struct snapshot *sn) {
    const struct ebb_stats *st = &sn->st;
    wl_say("ebbstats %s rss_kib=%llu own_kib=%llu in_use=%llu thread_cache=%llu central=%llu "
           "page_free=%llu released=%llu metadata=%llu resident=%llu",
           when, (unsigned long long)sn->rss_kib, (unsigned long long)sn->own_kib,
           (unsigned long long)st->in_use, (unsigned long long)st->thread_cache,
           (unsigned long long)st->central, (unsigned long long)st->page_free,
           (unsigned long long)st->released, (unsigned long long)st->metadata,
           (unsigned long long)st->resident);
}

/* Takes a new peak snapshot when RSS is more than 1% above the last one's, so the
 * snapshot is of the first moment RSS came within 1% of its peak (while RSS sits on a
 * plateau, as it does while handlers free their sets at the end, later moments would
 * say less about the load). */
static void peak_candidate(void) {
    uint64_t rss = self_rss_kib();
    pthread_mutex_lock(&snaps.mu);
    if (!snaps.peak.have || rss > snaps.peak.rss_kib + snaps.peak.rss_kib / 100) snaps.peak = take_snapshot();
    pthread_mutex_unlock(&snaps.mu);
}

/* The tick with the most live bytes so far: what sits beside the live bytes when they
 * peak is what peak RSS over peak live is made of (RSS itself may peak at another moment,
 * when a burst has just freed its blocks). */
static void live_candidate(void) {
    int64_t live = live_now();
    pthread_mutex_lock(&snaps.mu);
    if (!snaps.live.have || live > snaps.live_max) {
        snaps.live = take_snapshot();
        snaps.live_max = live;
    }
    pthread_mutex_unlock(&snaps.mu);
}

/* On every report tick of the load.  ebb_stats runs only when RSS or the live bytes
 * rose, so the cost stays small. */
static void snapshot_tick(void) {
    if (!ebb_stats_fn || !atomic_load(&snaps.in_load)) return;
    peak_candidate();
    live_candidate();
}

/* The load is over: a last candidate (a load shorter than a tick has one), then say
 * the peak snapshot. */
static void snapshot_load_over(void) {
    atomic_store(&snaps.in_load, false);
    if (!ebb_stats_fn) return;
    peak_candidate();
    pthread_mutex_lock(&snaps.mu);
    if (!snaps.live.have) snaps.live = take_snapshot(); /* a load shorter than a tick */
    say_snapshot("peak", &snaps.peak);
    say_snapshot("live", &snaps.live);
    pthread_mutex_unlock(&snaps.mu);
}

static void *reporter(void *arg) {
    (void)arg;
    while (!atomic_load(&reporter_stop)) {
        wl_say("live %llu %lld", (unsigned long long)wl_ms(), (long long)live_now());
        snapshot_tick();
        struct timespec ts = {(time_t)(P.report_ms / 1000), (long)(P.report_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void start_handler(struct slot *s) {
    s->state = SLOT_RUNNING;
    int e = pthread_create(&s->th, NULL, handler, s);
    if (e) {
        fprintf(stderr, "arena-creep: pthread_create: %s\n", strerror(e));
        exit(1);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: ebb-wl-arena-creep [--quick|--long] [--threads N] [--seed S] [--ops N]\n"
                    "       [--duration-s N] [--lifetime N] [--epoch N] [--hot-blocks N] [--cold-blocks N]\n"
                    "       [--hot-one-in N] [--keep-mib N] [--keep-one-in N] [--prefill-keep]\n"
                    "       [--idle-ms N] [--sync]\n"
                    "  --ops is per handler slot; suffixes k and m multiply by 1e3 and 1e6.\n"
                    "  --duration-s runs the load for that long instead (--long: 600 s).\n");
    exit(2);
}

static void set_defaults(void) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    P = (struct params){
        .threads = (unsigned)(8 * ncpu),
        .seed = 1,
        .ops_per_slot = 900000,
        .lifetime = 50000,
        .epoch = 20000,
        .hot_blocks = 8192,
        .cold_blocks = 256,
        .hot_one_in = 8,
        .send_one_in = 16,
        .keep_one_in = 512,
        .keep_bytes = 8ull << 20,
        .idle_ms = 3000,
        .report_ms = 20,
    };
}

/* --long: ten minutes of load over a long-lived set that is there from the start and
 * turns over slowly (at a few million operations a second, every few minutes). */
static void set_long(void) {
    P.duration_ms = 600000;
    P.keep_one_in = 262144;
    P.prefill_keep = true;
    P.idle_ms = 15000;
}

static bool parse_numeric_arg(int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (wl_arg_is(a, "--threads")) P.threads = (unsigned)wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--seed")) P.seed = wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--ops")) P.ops_per_slot = wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--duration-s")) P.duration_ms = wl_arg_num(argc, argv, i) * 1000;
    else if (wl_arg_is(a, "--lifetime")) P.lifetime = wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--epoch")) P.epoch = wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--hot-blocks")) P.hot_blocks = (uint32_t)wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--cold-blocks")) P.cold_blocks = (uint32_t)wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--hot-one-in")) P.hot_one_in = (uint32_t)wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--keep-mib")) P.keep_bytes = wl_arg_num(argc, argv, i) << 20;
    else if (wl_arg_is(a, "--keep-one-in")) P.keep_one_in = wl_arg_num(argc, argv, i);
    else if (wl_arg_is(a, "--idle-ms")) P.idle_ms = wl_arg_num(argc, argv, i);
    else return false;
    return true;
}

static void parse_args(int argc, char **argv) {
    set_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (wl_arg_is(a, "--quick")) {
            P.ops_per_slot = 200000;
            P.idle_ms = 2200;
        } else if (wl_arg_is(a, "--long")) {
            set_long();
        } else if (wl_arg_is(a, "--prefill-keep")) {
            P.prefill_keep = true;
        } else if (wl_arg_is(a, "--sync")) {
            P.sync = true;
        } else if (!parse_numeric_arg(argc, argv, &i)) {
            usage();
        }
    }
    if (!P.threads || !P.lifetime || !P.epoch || !P.hot_blocks || !P.hot_one_in || !P.keep_one_in) usage();
    if (P.cold_blocks == 0 || P.cold_blocks > P.hot_blocks) P.cold_blocks = P.hot_blocks;
    if (P.duration_ms) P.ops_per_slot = UINT64_MAX;
}

static void setup(void) {
    keep.cap = 1u << 16;
    own_map(page_round(sizeof(struct slot) * P.threads) +
            P.threads *
                (page_round(sizeof(struct block) * ws_cap()) + page_round(sizeof(struct block) * 256)) +
            page_round(sizeof(struct block) * keep.cap));
    slots = xmap(sizeof(struct slot) * P.threads);
    for (unsigned i = 0; i < P.threads; i++) {
        struct slot *s = &slots[i];
        s->index = i;
        s->ws = xmap(sizeof(struct block) * ws_cap());
        pthread_mutex_init(&s->mb.mu, NULL);
        s->mb.cap = 256;
        s->mb.ring = xmap(sizeof(struct block) * s->mb.cap);
    }
    keep.b = xmap(sizeof(struct block) * keep.cap);
    *(void **)&ebb_stats_fn = dlsym(RTLD_DEFAULT, "ebb_stats");
}

/* The long-lived set, full before the load (its blocks are counted to slot 0). */
static void prefill_keep(void) {
    struct wl_rng r;
    wl_rng_seed(&r, P.seed, 0x6b656570, 0);
    while (keep.bytes < P.keep_bytes) {
        size_t ks = pick_size(&r);
        struct block b = {alloc_block(&slots[0], ks, 0xa5), ks};
        keep_insert(&slots[0], &r, b);
    }
    live_flush();
}

/* Waits for a slot to change state; in duration mode also ends the load on time. */
static void wait_for_slots(const struct timespec *deadline) {
    if (!P.duration_ms) {
        pthread_cond_wait(&ctl.cv, &ctl.mu);
        return;
    }
    if (pthread_cond_timedwait(&ctl.cv, &ctl.mu, deadline) == ETIMEDOUT) atomic_store(&load_stop, true);
}

/* Runs handlers (replacing those that retire) until every slot has parked.  Returns
 * the number of handler threads started. */
static uint64_t run_load(void) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(P.duration_ms / 1000);
    deadline.tv_nsec += (long)(P.duration_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    uint64_t generations = P.threads;
    pthread_mutex_lock(&ctl.mu);
    for (unsigned i = 0; i < P.threads; i++) start_handler(&slots[i]);
    for (;;) {
        unsigned parked = 0;
        for (unsigned i = 0; i < P.threads; i++) {
            struct slot *s = &slots[i];
            if (s->state == SLOT_RETIRED) {
                pthread_mutex_unlock(&ctl.mu);
                pthread_join(s->th, NULL);
                pthread_mutex_lock(&ctl.mu);
                s->gen++;
                generations++;
                start_handler(s);
            } else if (s->state == SLOT_PARKED) parked++;
        }
        if (parked == P.threads) break;
        wait_for_slots(&deadline);
    }
    pthread_mutex_unlock(&ctl.mu);
    return generations;
}

static void report_load(uint64_t ns, uint64_t generations) {
    uint64_t ops = 0, sent = 0, received = 0, kept = 0;
    for (unsigned i = 0; i < P.threads; i++) {
        ops += slots[i].ops;
        sent += slots[i].sent;
        received += slots[i].received;
        kept += slots[i].kept;
    }
    wl_say("live %llu %lld", (unsigned long long)wl_ms(), (long long)live_now());
    wl_say("live-peak %lld", (long long)atomic_load(&live_peak));
    snapshot_load_over();
    wl_say("phase drop %llu", (unsigned long long)wl_ms());
    wl_say("result load %llu %llu", (unsigned long long)ops, (unsigned long long)ns);
    wl_say("note threads=%llu sent=%llu received=%llu kept=%llu keep_bytes=%llu",
           (unsigned long long)generations, (unsigned long long)sent, (unsigned long long)received,
           (unsigned long long)kept, (unsigned long long)keep.bytes);
    fprintf(stderr, "arena-creep: load done in %.2f s, %llu handler threads, idling %llu ms\n",
            (double)ns / 1e9, (unsigned long long)generations, (unsigned long long)P.idle_ms);
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* The idle period; under ebbmalloc with a breakdown 2 s into it (as the driver's "RSS 2 s
 * after load") when the idle lasts that long, and one at the end. */
static void idle_and_end(void) {
    uint64_t after = ebb_stats_fn && P.idle_ms >= 2000 ? 2000 : 0;
    sleep_ms(after);
    if (after) {
        struct snapshot sn = take_snapshot();
        say_snapshot("after", &sn);
    }
    sleep_ms(P.idle_ms - after);
    if (ebb_stats_fn) {
        struct snapshot sn = take_snapshot();
        say_snapshot("end", &sn);
    }
    wl_say("phase end %llu", (unsigned long long)wl_ms());
}

static void teardown(pthread_t rep) {
    atomic_store(&reporter_stop, true);
    pthread_join(rep, NULL);
    pthread_mutex_lock(&ctl.mu);
    ctl.exit_now = true;
    pthread_cond_broadcast(&ctl.exit_cv);
    pthread_mutex_unlock(&ctl.mu);
    for (unsigned i = 0; i < P.threads; i++) pthread_join(slots[i].th, NULL);
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    wl_start(P.sync);
    if (P.duration_ms)
        fprintf(stderr, "arena-creep: %u handlers for %llu s, lifetime %llu, epoch %llu, seed %llu\n",
                P.threads, (unsigned long long)(P.duration_ms / 1000), (unsigned long long)P.lifetime,
                (unsigned long long)P.epoch, (unsigned long long)P.seed);
    else
        fprintf(stderr, "arena-creep: %u handlers, %llu ops each, lifetime %llu, epoch %llu, seed %llu\n",
                P.threads, (unsigned long long)P.ops_per_slot, (unsigned long long)P.lifetime,
                (unsigned long long)P.epoch, (unsigned long long)P.seed);
    setup();
    pthread_t rep;
    pthread_create(&rep, NULL, reporter, NULL);
    if (P.prefill_keep) prefill_keep();

    atomic_store(&snaps.in_load, true);
    wl_say("phase load-start %llu", (unsigned long long)wl_ms());
    uint64_t t0 = wl_now_ns();
    uint64_t generations = run_load();
    report_load(wl_now_ns() - t0, generations);
    idle_and_end();
    teardown(rep);
    return 0;
}
