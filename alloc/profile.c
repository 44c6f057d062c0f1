/* profile.c: the sampled heap profile (layout and reader's rules: struct ebb_prof_header
 * in ebbmalloc.h).
 *
 * Sampling.  The bytes a thread asks for (n + 1 per request, so that malloc(0) can be
 * sampled too) form a line on which marks fall as a Poisson process of rate
 * 1/EBB_PROF_SAMPLE; a request that holds a mark is sampled.  Each thread counts down
 * the bytes to its next mark, an exponentially distributed interval drawn again after
 * each sample (the process has no memory, so the draw starts where the sampled request
 * ends).  A request of n bytes is then sampled with probability p = 1 - exp(-(n+1)/T),
 * and each sample stands for 1/p requests of its size (the unsampling weight of pprof
 * and jeprof): the sums over samples are unbiased estimates of the live and allocated
 * bytes and objects.  1/p is rounded to an integer at random (up with the probability
 * of its fraction), so the estimate stays unbiased and a free takes away exactly what
 * its allocation added.
 *
 * Two countdowns: small requests are counted by ebb_malloc's fast path, which calls
 * ebbi_prof_sample_alloc when its countdown goes negative; requests above 256 KiB (and
 * big aligned ones) are counted in ebbi_large_alloc, which every one of them reaches,
 * against ebbi_prof_left.  Marks on two disjoint parts of the byte line are still a
 * Poisson process of the same rate, so the estimate does not care which part counted.
 *
 * A sampled block lives in a span of its own: a small request gets a LARGE span of the
 * pages its size class needs, a large one already has its span.  The span's cls, which
 * the page heap keeps 0 for every other LARGE or MAPPED span, says that it is sampled
 * (and, for a small request, its class); its prof fields name the stack's hash, the
 * size and the object weight.  free() of it reaches ebbi_free_slow through the page
 * map (class 0) without a single instruction more on the fast path.
 *
 * The table.  Fixed size, in one shared mapping of /dev/shm/ebbmalloc.<pid>.heap (or
 * anonymous memory when that cannot be made): PROF_SLOTS stacks, PROF_FRAMES frames.
 * Slots are handed out in order and frames appended, so only the used part is ever
 * touched; the file is backed (fallocate) in PROF_GROW steps ahead of use, so that a
 * full /dev/shm refuses a step instead of killing the process with SIGBUS.  Lookups
 * go through a private index (hash -> slot, linear probing), lock-free; a new stack
 * is added under pt_lock, which no other allocator path takes and which is held for
 * the table's own memory only (no lock is taken under it).  When
 * no slot or frame room is left, a slot whose live objects went back to zero is
 * reused (a clock hand looks at PROF_RECLAIM slots per new stack); failing that the
 * sample is counted in the overflow slot (slot 0, one frame of value 0) and in
 * `dropped`.
 *
 * Concurrency.  Counters are atomic adds on the shared slot.  A thread that uses a slot
 * pins it (pin[k] > 0, CAS); a slot is reused only after its pin went from 0 to -1
 * under pt_lock and its live objects are still 0 then: every add and every free pins
 * first, so nothing can be added to or taken from a slot while it changes stacks.  The
 * index entry is published with release after the slot it names is complete; lookups
 * read it with acquire.  Readers outside the process see depth (release) last. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "internal.h"

#define PROF_SLOTS 16384u /* the table's size (ebbi_prof_set_capacity for tests) */
#define PROF_FRAMES (256u << 10)
#define PROF_HEADER 128u /* room for the header to grow */
#define PROF_GROW ((size_t)64 << 10)
#define PROF_PROBE 64
#define PROF_RECLAIM 64
#define IDX_EMPTY 0
#define IDX_TOMB 0xffff
#define NONE UINT32_MAX
#define OBJ_BITS 40
#define OBJ_MASK ((1ull << OBJ_BITS) - 1)
#define EPOCH_MASK ((1u << (64 - OBJ_BITS)) - 1)
#define MAX_INTERVAL ((int64_t)1 << OBJ_BITS)

_Static_assert(sizeof(struct ebb_prof_header) <= PROF_HEADER, "header room");
_Static_assert(sizeof(struct ebb_prof_slot) % 8 == 0, "slots keep 8-byte alignment");
_Static_assert(PROF_SLOTS < IDX_TOMB, "slot numbers fit the index");

static uint32_t cap_slots = PROF_SLOTS, cap_frames = PROF_FRAMES; /* for the next table */

struct prof_table {
    struct ebb_prof_header *h;
    struct ebb_prof_slot *slots;
    uint64_t *frames;
    size_t size;                      /* bytes mapped */
    int fd;                           /* the file, kept to back it in steps; -1: anonymous */
    uint64_t dev, ino;                /* of the file, to be sure fd still names it */
    size_t slots_ready;               /* bytes from the start of the file that are backed */
    size_t frames_ready;              /* frames that are backed */
    uint32_t nslots, nframes, nindex; /* nindex = 2 * nslots buckets, powers of two */
    uint16_t *index;                  /* buckets: slot + 1, IDX_EMPTY or IDX_TOMB */
    int32_t *pin;                     /* per slot: users, or -1 while it changes stacks */
    uint8_t *cap;                     /* per slot: frames its area holds */
    void *priv;
    size_t priv_size;
    uint32_t used; /* slots handed out; slot 0 is the overflow slot */
    uint32_t hand; /* where the next search for a reusable slot starts */
    uint64_t overflow_hash;
    char path[96];
};

/* Written by the thread that makes the table (pt_state 1), read after pt_state 2
 * (acquire); used/hand/frames_used/ready change under pt_lock. */
static struct prof_table pt = {.fd = -1};
static _Atomic int pt_state;  /* 0 not made, 1 being made, 2 ready, 3 off */
static ebb_lock_t pt_lock;    /* adding stacks; only this file takes it */
static uint32_t pt_epoch = 1; /* tables this process made; a fork child's is new */

EBB_TLS int64_t ebbi_prof_left; /* bytes until the next sampled large request */
static EBB_TLS uint64_t tl_rng;
static EBB_TLS bool tl_drawn_small, tl_drawn_large; /* the countdowns were drawn once */
static EBB_TLS bool tl_busy; /* inside a sample: a signal handler's mallocs are not sampled */

/* ---------------------------------------------------------------- numbers */
static uint64_t rng_next(void) {
    uint64_t x = tl_rng;
    if (unlikely(!x)) x = ebbi_random64() | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tl_rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double rng_unit(void) { return (double)((rng_next() >> 11) + 1) * 0x1.0p-53; } /* (0, 1] */

#define LN2 0.69314718055994530942
/* ln x for x > 0 (normal): x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m from the atanh
 * series, which needs 8 terms for 1e-15 here.  libm is not a dependency. */
static double ln(double x) {
    union {
        double d;
        uint64_t u;
    } v = {x};
    int e = (int)((v.u >> 52) & 0x7ff) - 1023;
    v.u = (v.u & ((1ull << 52) - 1)) | (1023ull << 52);
    double m = v.d;
    if (m > 1.41421356237309504880) m *= 0.5, e++;
    double s = (m - 1) / (m + 1), s2 = s * s;
    double sum =
        1 +
        s2 * (1.0 / 3 +
              s2 * (1.0 / 5 +
                    s2 * (1.0 / 7 +
                          s2 * (1.0 / 9 + s2 * (1.0 / 11 + s2 * (1.0 / 13 + s2 * (1.0 / 15 + s2 / 17)))))));
    return e * LN2 + 2 * s * sum;
}

/* 1 - e^-x for x >= 0, accurate also for tiny x. */
static double one_minus_exp_neg(double x) {
    if (x < 1e-4) return x * (1 - x * (0.5 - x * (1.0 / 6 - x / 24)));
    if (x > 40) return 1;
    int k = (int)(x / LN2);
    double r = x - k * LN2, term = 1, sum = 1; /* e^-r, r in [0, ln 2) */
    for (int i = 1; i < 20; i++) {
        term *= -r / i;
        sum += term;
    }
    while (k-- > 0) sum *= 0.5;
    return 1 - sum;
}

static int64_t interval(void) {
    int64_t t = ebbi_opt(EBB_OPT_PROF_SAMPLE);
    return t < 1 ? 1 : t > MAX_INTERVAL ? MAX_INTERVAL : t;
}

static int64_t draw(void) {
    double v = -ln(rng_unit()) * (double)interval();
    return v >= 4e18 ? (int64_t)4e18 : (int64_t)v;
}

/* The requests one sample stands for, as an integer of the right mean: a request that
 * counted c bytes on the line holds a mark with probability 1 - e^(-c/T). */
static uint64_t weight(size_t c) {
    double w = 1 / one_minus_exp_neg((double)c / (double)interval());
    if (w > (double)OBJ_MASK) w = (double)OBJ_MASK;
    uint64_t whole = (uint64_t)w;
    return whole + (rng_unit() < w - (double)whole ? 1 : 0);
}

static bool enabled(void) {
    return ebbi_opt(EBB_OPT_PROF) && atomic_load_explicit(&pt_state, memory_order_relaxed) != 3;
}

/* A countdown went negative on a request that counted c bytes: true if the request is
 * to be sampled.  Redraws the countdown.  A countdown the thread never drew (0 at
 * first) starts with this request: its first draw, less the request, decides. */
static bool fire(int64_t *left, bool *drawn, size_t c) {
    if (!enabled()) {
        *left = INT64_MAX;
        return false;
    }
    if (tl_busy) return false; /* a signal handler inside a sample: the sample redraws */
    if (unlikely(!*drawn)) {
        *drawn = true;
        uint64_t l = (uint64_t)draw() - c;
        if ((int64_t)l >= 0) {
            *left = (int64_t)l;
            return false;
        }
    }
    *left = draw();
    return true;
}

/* ---------------------------------------------------------------- the table */
static uint64_t stack_hash(const uint64_t *f, int d) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)d;
    for (int i = 0; i < d; i++) {
        h ^= f[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h ? h : 1;
}

static size_t round_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

static size_t frames_offset(void) {
    return round_up(PROF_HEADER + (size_t)pt.nslots * sizeof(struct ebb_prof_slot), 64);
}

/* The file backs [off, off + len): a full /dev/shm says so here, not with SIGBUS. */
static bool back(size_t off, size_t len) {
    if (pt.fd < 0) return true;
    struct ebb_file_id id;
    if (!ebbi_os_fstat(pt.fd, &id) || id.dev != pt.dev || id.ino != pt.ino)
        return false; /* the program closed our descriptor and reused its number */
    return ebbi_os_fallocate(pt.fd, off, len) == 0;
}

static bool slot_backed(uint32_t k) {
    size_t end = PROF_HEADER + ((size_t)k + 1) * sizeof(struct ebb_prof_slot);
    if (end <= pt.slots_ready) return true;
    size_t to = round_up(end, PROF_GROW);
    if (to > frames_offset()) to = frames_offset();
    if (!back(pt.slots_ready, to - pt.slots_ready)) return false;
    pt.slots_ready = to;
    return true;
}

static bool frames_backed(size_t end) {
    if (end <= pt.frames_ready) return true;
    size_t to = round_up(end * 8, PROF_GROW) / 8;
    if (to > pt.nframes) to = pt.nframes;
    if (!back(frames_offset() + pt.frames_ready * 8, (to - pt.frames_ready) * 8)) return false;
    pt.frames_ready = to;
    return true;
}

static void touch(void) { __atomic_store_n(&pt.h->updated_ms, ebbi_realtime_ms(), __ATOMIC_RELAXED); }

/* The stats page's name plus ".heap" (files of processes that are gone are removed when
 * the page is made, shm.c). */
static bool make_file(size_t size) {
    size_t len = ebbi_shm_name(pt.path, sizeof pt.path - 6);
    if (!len || len >= sizeof pt.path - 7) return false;
    memcpy(pt.path + len, ".heap", 6);
    const int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW;
    int fd = ebbi_os_open(pt.path, flags, 0600);
    /* With a known PID namespace the name is this process's alone: the file was left by
     * an earlier process with this pid.  With an unknown one ("ebbmalloc.0.") it may be
     * another namespace's live profile: left alone. */
    if (fd < 0 && ebbi_os_error() == EEXIST && strncmp(pt.path, "/dev/shm/ebbmalloc.0.", 21)) {
        ebbi_os_unlink(pt.path);
        fd = ebbi_os_open(pt.path, flags, 0600);
    }
    if (fd < 0) return false;
    /* A descriptor number above the ones programs use first (fd-passing code and
     * daemons that close "all" small descriptors are then less likely to meet it). */
    int high = ebbi_os_dup_fd(fd, 100);
    if (high >= 0) {
        ebbi_os_close(fd);
        fd = high;
    }
    pt.fd = fd;
    void *p = NULL;
    struct ebb_file_id id;
    if (ebbi_os_fstat(fd, &id) && (pt.dev = id.dev, pt.ino = id.ino, true) &&
        ebbi_os_ftruncate(fd, size) == 0 && back(0, PROF_GROW))
        p = ebbi_os.map_shared(fd, size);
    if (!p) {
        ebbi_os_close(fd);
        pt.fd = -1;
        ebbi_os_unlink(pt.path);
        pt.path[0] = 0;
        return false;
    }
    pt.h = p;
    pt.slots_ready = PROF_GROW;
    pt.frames_ready = 0;
    return true;
}

/* The table, made on the first sample of the process (or of a fork child). */
static bool table_make(void) {
    pt.nslots = cap_slots, pt.nframes = cap_frames, pt.nindex = 2 * cap_slots;
    size_t size = round_up(frames_offset() + (size_t)pt.nframes * 8, ebbi_os_page_size());
    pt.priv_size =
        round_up(pt.nindex * sizeof(uint16_t) + pt.nslots * (sizeof(int32_t) + 1), ebbi_os_page_size());
    pt.priv = ebbi_os.map(pt.priv_size);
    if (!pt.priv) return false;
    pt.index = pt.priv;
    pt.pin = (int32_t *)(pt.index + pt.nindex);
    pt.cap = (uint8_t *)(pt.pin + pt.nslots);
    pt.size = size;
    if (!ebbi_opt(EBB_OPT_STATS_SHM) || !make_file(size)) {
        /* Nothing to publish it in: the process keeps its profile all the same. */
        pt.h = ebbi_os.map(size);
        if (!pt.h) {
            ebbi_os.unmap(pt.priv, pt.priv_size);
            pt.priv = NULL;
            return false;
        }
        pt.fd = -1;
        pt.slots_ready = frames_offset();
        pt.frames_ready = pt.nframes;
    }
    pt.slots = (struct ebb_prof_slot *)((char *)pt.h + PROF_HEADER);
    pt.frames = (uint64_t *)((char *)pt.h + frames_offset());
    struct ebb_prof_header *h = pt.h;
    h->version = EBB_PROF_VERSION;
    h->header_size = PROF_HEADER;
    h->pid = ebbi_os_getpid();
    h->slot_count = pt.nslots;
    h->start_time = ebbi_shm_start_time();
    h->sample_interval = (uint64_t)interval();
    h->frames_offset = frames_offset();
    h->frames_cap = pt.nframes;
    /* slot 0, the overflow slot, and its one frame (0) are reserved; published when
     * first needed */
    pt.used = 1;
    pt.hand = 1;
    pt.cap[0] = 1;
    pt.overflow_hash = stack_hash((const uint64_t[]){0}, 1);
    h->frames_used = 1;
    h->updated_ms = ebbi_realtime_ms();
    atomic_thread_fence(memory_order_release);
    h->magic = EBB_PROF_MAGIC;
    return true;
}

static bool table_ready(void) {
    int st = atomic_load_explicit(&pt_state, memory_order_acquire);
    if (likely(st == 2)) return true;
    if (st != 0) return false;
    int zero = 0;
    if (!atomic_compare_exchange_strong(&pt_state, &zero, 1)) return false; /* another thread makes it */
    bool ok = table_make();
    atomic_store_explicit(&pt_state, ok ? 2 : 3, memory_order_release);
    return ok;
}

static bool pin(uint32_t k) {
    int32_t v = __atomic_load_n(&pt.pin[k], __ATOMIC_RELAXED);
    do {
        if (v < 0) return false;
    } while (!__atomic_compare_exchange_n(&pt.pin[k], &v, v + 1, true, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
    return true;
}

static void unpin(uint32_t k) { __atomic_fetch_sub(&pt.pin[k], 1, __ATOMIC_RELEASE); }

static bool same_frames(uint32_t k, const uint64_t *f, int d) {
    const struct ebb_prof_slot *s = &pt.slots[k];
    if (__atomic_load_n(&s->depth, __ATOMIC_ACQUIRE) != (uint32_t)d) return false;
    if (!f) return true;
    const uint64_t *g = pt.frames + s->first;
    for (int i = 0; i < d; i++)
        if (g[i] != f[i]) return false;
    return true;
}

/* The slot holding stack h (with frames f when given), pinned; NONE if not there. */
static uint32_t find(uint64_t h, const uint64_t *f, int d) {
    uint32_t b = (uint32_t)h & (pt.nindex - 1);
    for (int i = 0; i < PROF_PROBE; i++, b = (b + 1) & (pt.nindex - 1)) {
        uint16_t v = __atomic_load_n(&pt.index[b], __ATOMIC_ACQUIRE);
        if (v == IDX_EMPTY) return NONE;
        if (v == IDX_TOMB) continue;
        uint32_t k = v - 1u;
        if (__atomic_load_n(&pt.slots[k].hash, __ATOMIC_RELAXED) != h || !pin(k)) continue;
        /* pinned: it cannot change stacks now; look again */
        if (__atomic_load_n(&pt.slots[k].hash, __ATOMIC_RELAXED) == h && (d < 0 || same_frames(k, f, d)))
            return k;
        unpin(k);
    }
    return NONE;
}

/* A free bucket for hash h, or NONE.  Under pt_lock. */
static uint32_t free_bucket(uint64_t h) {
    uint32_t b = (uint32_t)h & (pt.nindex - 1);
    for (int i = 0; i < PROF_PROBE; i++, b = (b + 1) & (pt.nindex - 1)) {
        uint16_t v = pt.index[b];
        if (v == IDX_EMPTY || v == IDX_TOMB) return b;
    }
    return NONE;
}

static void unindex(uint64_t h, uint32_t k) {
    uint32_t b = (uint32_t)h & (pt.nindex - 1);
    for (int i = 0; i < PROF_PROBE; i++, b = (b + 1) & (pt.nindex - 1))
        if (pt.index[b] == k + 1) {
            __atomic_store_n(&pt.index[b], IDX_TOMB, __ATOMIC_RELEASE);
            return;
        }
}

/* Writes stack (h, f, d) into slot k, whose frame area is at `first`, and publishes it:
 * depth last for readers outside, the index entry last for lookups here. */
static void fill(uint32_t k, uint32_t b, uint64_t h, const uint64_t *f, int d, uint32_t first) {
    struct ebb_prof_slot *s = &pt.slots[k];
    __atomic_store_n(&s->depth, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&s->hash, h, __ATOMIC_RELAXED);
    atomic_thread_fence(memory_order_release); /* a reader that sees new frames sees the new hash */
    s->first = first;
    memcpy(pt.frames + first, f, (size_t)d * 8);
    __atomic_store_n(&s->live_bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->live_objects, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->total_bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->total_objects, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->depth, (uint32_t)d, __ATOMIC_RELEASE);
    __atomic_store_n(&pt.index[b], (uint16_t)(k + 1), __ATOMIC_RELEASE);
}

/* A slot whose stack holds nothing live any more, with room for d frames, taken
 * (pin -1); NONE if the hand finds none.  Under pt_lock. */
static uint32_t reclaim(int d) {
    if (pt.used <= 1) return NONE;
    for (int i = 0; i < PROF_RECLAIM; i++) {
        uint32_t k = 1 + pt.hand++ % (pt.used - 1);
        struct ebb_prof_slot *s = &pt.slots[k];
        if (pt.cap[k] < d || __atomic_load_n(&s->live_objects, __ATOMIC_RELAXED) != 0) continue;
        int32_t zero = 0;
        if (!__atomic_compare_exchange_n(&pt.pin[k], &zero, -1, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        if (__atomic_load_n(&s->live_objects, __ATOMIC_RELAXED) == 0 &&
            __atomic_load_n(&s->live_bytes, __ATOMIC_RELAXED) == 0) {
            unindex(s->hash, k);
            return k;
        }
        __atomic_store_n(&pt.pin[k], 0, __ATOMIC_RELEASE);
    }
    return NONE;
}

/* The overflow slot, published on first use, pinned.  Under pt_lock. */
static uint32_t overflow(void) {
    if (!pt.slots[0].depth) {
        uint32_t b = free_bucket(pt.overflow_hash);
        if (b == NONE || !frames_backed(1)) return NONE;
        fill(0, b, pt.overflow_hash, (const uint64_t[]){0}, 1, 0);
    }
    __atomic_fetch_add(&pt.pin[0], 1, __ATOMIC_ACQUIRE);
    return 0;
}

/* Adds stack (h, f, d) and returns its slot pinned: found, new, reused, or the overflow
 * slot (then *hp is its hash). */
static uint32_t insert(uint64_t *hp, const uint64_t *f, int d) {
    uint64_t h = *hp;
    ebbi_lock(&pt_lock);
    uint32_t k = find(h, f, d); /* another thread may have added it meanwhile */
    if (k != NONE) goto out;
    uint32_t b = free_bucket(h);
    if (b != NONE && pt.used < pt.nslots && pt.h->frames_used + (uint64_t)d <= pt.nframes &&
        slot_backed(pt.used) && frames_backed(pt.h->frames_used + (uint64_t)d)) {
        k = pt.used++;
        uint32_t first = (uint32_t)pt.h->frames_used;
        __atomic_store_n(&pt.h->frames_used, first + (uint64_t)d, __ATOMIC_RELAXED);
        pt.cap[k] = (uint8_t)d;
        __atomic_store_n(&pt.pin[k], 1, __ATOMIC_RELAXED);
        fill(k, b, h, f, d, first);
        goto out;
    }
    if (b != NONE && (k = reclaim(d)) != NONE) {
        fill(k, b, h, f, d, pt.slots[k].first);
        __atomic_store_n(&pt.pin[k], 1, __ATOMIC_RELEASE);
        goto out;
    }
    __atomic_fetch_add(&pt.h->dropped, 1, __ATOMIC_RELAXED);
    k = overflow();
    *hp = pt.overflow_hash;
out:
    ebbi_unlock(&pt_lock);
    return k;
}

/* Counts a sample of n bytes with weight obj at stack f[0..d) and marks span s with it. */
static bool record(struct ebb_span *s, const uint64_t *f, int d, size_t n, uint64_t obj) {
    if (!table_ready()) return false;
    uint64_t h = d ? stack_hash(f, d) : pt.overflow_hash;
    uint32_t k = d ? find(h, f, d) : NONE;
    if (k == NONE) {
        if (d) {
            k = insert(&h, f, d);
        } else {
            ebbi_lock(&pt_lock);
            k = overflow();
            ebbi_unlock(&pt_lock);
        }
    }
    if (k == NONE) return false;
    struct ebb_prof_slot *sl = &pt.slots[k];
    int64_t bytes = (int64_t)(n * obj);
    __atomic_fetch_add(&sl->live_bytes, bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sl->live_objects, (int64_t)obj, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sl->total_bytes, (uint64_t)bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sl->total_objects, obj, __ATOMIC_RELAXED);
    unpin(k);
    __atomic_fetch_add(&pt.h->samples, 1, __ATOMIC_RELAXED);
    touch();
    s->prof.hash = h;
    s->prof.size = n;
    s->prof.weight = obj | (uint64_t)(pt_epoch & EPOCH_MASK) << OBJ_BITS;
    return true;
}

/* Takes a sampled block's contribution out of its stack (free, or before it changes).
 * A working section, like a sample: a fork from a signal handler that interrupts it
 * must not reset the table under it (ebbi_prof_fork_child). */
static void unrecord(struct ebb_span *s) {
    if ((s->prof.weight >> OBJ_BITS) != (pt_epoch & EPOCH_MASK)) return; /* a fork parent's */
    ebbi_work_begin();
    uint32_t k =
        atomic_load_explicit(&pt_state, memory_order_acquire) == 2 ? find(s->prof.hash, NULL, -1) : NONE;
    if (k != NONE) {
        uint64_t obj = s->prof.weight & OBJ_MASK;
        struct ebb_prof_slot *sl = &pt.slots[k];
        __atomic_fetch_sub(&sl->live_bytes, (int64_t)(s->prof.size * obj), __ATOMIC_RELAXED);
        __atomic_fetch_sub(&sl->live_objects, (int64_t)obj, __ATOMIC_RELAXED);
        unpin(k);
        touch();
    }
    ebbi_work_end();
}

/* ---------------------------------------------------------------- samples */
/* The sampled small block: a LARGE span of the pages its class needs, block at its
 * start (page-aligned, so any alignment a class gives is kept). */
static struct ebb_span *small_span(size_t n) {
    unsigned cls = ebbi_size_to_class(n);
    size_t np = (ebbi_classes[cls].size + EBB_PAGE - 1) >> EBB_PAGE_SHIFT;
    struct ebb_span *s = ebbi_page_alloc(np, 1);
    if (s) s->cls = (uint8_t)cls;
    return s;
}

/* Small requests count n bytes (the fast path's countdown, tc->prof_left), large ones
 * n + 1 (so that no request is outside the line; a small malloc(0) is never sampled,
 * and its 16 bytes are not missed).  The caller's cache is busy: no drain touches
 * prof_left while this redraws it. */
void *ebbi_prof_sample_alloc(struct ebb_tcache *tc, size_t n) {
    ebbi_ensure_init();
    if (!fire(&tc->prof_left, &tl_drawn_small, n)) return NULL;
    int saved = errno;
    tl_busy = true;
    ebbi_work_begin(); /* the table in hand: a fork from a signal handler leaves it be */
    uint64_t f[EBB_PROF_MAX_FRAMES];
    int d = ebbi_unwind(f, EBB_PROF_MAX_FRAMES);
    struct ebb_span *s = n <= EBB_SMALL_MAX ? small_span(n) : ebbi_large_span(n, 0, false);
    if (s) {
        if (n > EBB_SMALL_MAX) s->cls = EBB_CLS_SAMPLED_LARGE;
        if (!record(s, f, d, n, weight(n))) { /* no table (yet, or any more) */
            s->cls = 0;
            if (n <= EBB_SMALL_MAX) { /* its pages go back: the request gets a block of its class */
                ebbi_page_free(s);
                s = NULL;
            }
        }
    }
    ebbi_work_end();
    tl_busy = false;
    errno = saved;
    return s ? (void *)s->start : NULL;
}

/* ebbi_large_alloc's countdown went negative on span s of n bytes. */
EBB_NOINLINE void ebbi_prof_large(struct ebb_span *s, size_t n) {
    if (!fire(&ebbi_prof_left, &tl_drawn_large, n + 1)) return;
    int saved = errno;
    tl_busy = true;
    ebbi_work_begin();
    uint64_t f[EBB_PROF_MAX_FRAMES];
    int d = ebbi_unwind(f, EBB_PROF_MAX_FRAMES);
    s->cls = EBB_CLS_SAMPLED_LARGE;
    if (!record(s, f, d, n, weight(n + 1))) s->cls = 0;
    ebbi_work_end();
    tl_busy = false;
    errno = saved;
}

void ebbi_prof_free(struct ebb_span *s) { unrecord(s); }

/* A sampled block shrank in place to n bytes: the same objects, smaller. */
void ebbi_prof_resize(struct ebb_span *s, size_t n) {
    if ((s->prof.weight >> OBJ_BITS) != (pt_epoch & EPOCH_MASK)) return;
    ebbi_work_begin();
    uint32_t k =
        atomic_load_explicit(&pt_state, memory_order_acquire) == 2 ? find(s->prof.hash, NULL, -1) : NONE;
    if (k != NONE) {
        int64_t delta = ((int64_t)n - (int64_t)s->prof.size) * (int64_t)(s->prof.weight & OBJ_MASK);
        __atomic_fetch_add(&pt.slots[k].live_bytes, delta, __ATOMIC_RELAXED);
        unpin(k);
        touch();
    }
    s->prof.size = n;
    ebbi_work_end();
}

/* A large block grew in place to n bytes (mremap): counted as a new request of n bytes
 * in place of the old one, which leaves the profile if it was sampled. */
EBB_NOINLINE void ebbi_prof_regrow(struct ebb_span *s, size_t n) {
    if (s->cls) {
        unrecord(s);
        s->cls = 0;
    }
    ebbi_prof_count_large(s, n);
}

/* ---------------------------------------------------------------- process */
/* The child of a fork has the parent's table mapped MAP_SHARED: it lets go of it and
 * makes its own at its first sample.  Blocks the parent sampled carry the old epoch:
 * their frees change nothing.
 *
 * A fork from a signal handler that interrupted ebbmalloc on this thread (init.c) —
 * inside a sample, or holding a lock a sample may wait for — resumes the interrupted
 * frames in the child, which may be in the middle of the table: nothing is reset under
 * them.  The table stays mapped where it is, but privately (the file mapped again
 * MAP_PRIVATE over it: the same content, the child's writes no longer reach the
 * parent's file), and the child's profile stays off. */
void ebbi_prof_fork_child(bool interrupted) {
    if (interrupted || tl_busy) {
        if (pt.h && pt.fd >= 0) ebbi_os_map_fixed(pt.h, pt.size, pt.fd);
        atomic_store(&pt_state, 3);
        return;
    }
    ebbi_lock_reset(&pt_lock);
    ebbi_unwind_fork_child();
    if (pt.h) ebbi_os.unmap(pt.h, pt.size);
    if (pt.priv) ebbi_os.unmap(pt.priv, pt.priv_size);
    if (pt.fd >= 0) ebbi_os_close(pt.fd);
    uint32_t epoch = pt_epoch + 1;
    memset(&pt, 0, sizeof pt); /* the capacity of the next table stays */
    pt.fd = -1;
    pt_epoch = epoch;
    atomic_store(&pt_state, 0);
}

/* The size of the tables made from now on (slots a power of two, 2..PROF_SLOTS): tests
 * fill a small one. */
void ebbi_prof_set_capacity(uint32_t slots, uint32_t frames) {
    if (slots >= 2 && slots <= PROF_SLOTS && !(slots & (slots - 1))) cap_slots = slots;
    if (frames >= 64 && frames <= PROF_FRAMES) cap_frames = frames;
}

/* The table (for tests: it may be anonymous memory that no reader can find), or NULL. */
const struct ebb_prof_header *ebbi_prof_header(void) {
    return atomic_load_explicit(&pt_state, memory_order_acquire) == 2 ? pt.h : NULL;
}

void ebbi_prof_at_exit(void) {
    if (pt.h && pt.path[0] && pt.h->pid == ebbi_os_getpid()) ebbi_os_unlink(pt.path);
}
