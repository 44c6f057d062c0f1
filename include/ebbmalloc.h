/* ebbmalloc public API.
 *
 * Two ways to use ebbmalloc:
 *  - LD_PRELOAD=libebbmalloc.so: replaces malloc/free/... for the whole process.
 *  - link libebbmalloc.a (or dependency('ebbmalloc')) and call the ebb_ functions
 *    below: the process's own malloc stays in place.
 *
 * Every ebb_ function has the semantics of the glibc function of the same name.
 */
#ifndef EBBMALLOC_H
#define EBBMALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <malloc.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EBB_VERSION_MAJOR 0
#define EBB_VERSION_MINOR 1
#define EBB_VERSION_PATCH 0

const char *ebb_version(void);

void *ebb_malloc(size_t size);
void ebb_free(void *ptr);
void *ebb_calloc(size_t nmemb, size_t size);
void *ebb_realloc(void *ptr, size_t size);
void *ebb_reallocarray(void *ptr, size_t nmemb, size_t size);
int ebb_posix_memalign(void **memptr, size_t alignment, size_t size);
void *ebb_aligned_alloc(size_t alignment, size_t size);
void *ebb_memalign(size_t alignment, size_t size);
void *ebb_valloc(size_t size);
void *ebb_pvalloc(size_t size);
size_t ebb_malloc_usable_size(void *ptr);
void ebb_free_sized(void *ptr, size_t size);
void ebb_free_aligned_sized(void *ptr, size_t alignment, size_t size);
int ebb_mallopt(int param, int value);
int ebb_malloc_trim(size_t pad);
void ebb_malloc_stats(void);
struct mallinfo ebb_mallinfo(void);
struct mallinfo2 ebb_mallinfo2(void);
int ebb_malloc_info(int options, FILE *stream);

/* Where ebbmalloc's memory is, in bytes.  Two sides are counted apart, each where it
 * changes: resident, released and mapped from what ebbmalloc asked of the kernel (mapped,
 * unmapped, given back with madvise, taken back) plus its metadata; the parts from the
 * tiers that hold the memory.  So
 *     resident = in_use + thread_cache + central + page_free + metadata
 * holds exactly when no other thread allocates, frees or releases while the snapshot is
 * taken, and otherwise within what moved meanwhile (a few spans and blocks: ebb_stats
 * repeats its reads while spans are seen moving between tiers, up to a bound); and
 *     mapped = resident + released
 * always (one reading of the kernel side). */
struct ebb_stats {
    uint64_t in_use;              /* handed to the program (rounded up to size classes / pages) */
    uint64_t thread_cache;        /* free objects held in per-thread caches */
    uint64_t central;             /* free objects in central lists, transfer caches, uncarved span tails */
    uint64_t page_free;           /* free spans in the page heap whose pages are still resident */
    uint64_t released;            /* free spans returned to the kernel with madvise (not resident) */
    uint64_t metadata;            /* ebbmalloc's own bookkeeping (span records, page map, caches) */
    uint64_t resident;            /* heap memory mapped and not given back, plus metadata */
    uint64_t mapped;              /* resident + released: address space ebbmalloc holds */
    uint64_t peak_in_use;         /* high-water mark of in_use */
    uint64_t threads;             /* thread caches alive */
    uint64_t release_calls;       /* madvise calls made to return memory */
    uint64_t released_total;      /* bytes returned to the kernel since start */
    uint64_t cgroup_limit;        /* container memory limit found at start, 0 when none */
    uint64_t soft_limit;          /* EBB_SOFT_LIMIT in bytes, 0 when off */
    uint64_t idle_caches_emptied; /* caches of sleeping threads emptied since start */
};

/* Fill *st with a snapshot (see above for how consistent).  Never allocates. */
void ebb_stats(struct ebb_stats *st);

/* What has moved between ebbmalloc and the kernel since the process started, in bytes:
 * which rule gave memory back, and how much of what was asked for later was taken from
 * memory given back (so the kernel faulted it in again).  Two readings a while apart
 * tell where RSS that grows back during a load comes from: of faulted, at least
 * faulted - grown was memory given back before (grown is new address space, which also
 * starts in the released set); refaulted is memory that was not idle after all (given
 * back less than EBB_RELEASE_MS before it was taken again).  Counters only grow; each is read under
 * the lock it is kept under, so each is exact and the set is not one instant.  Never
 * allocates. */
struct ebb_flow {
    uint64_t grown;          /* address space mapped for the page heap */
    uint64_t direct;         /* mapped for blocks with a mapping of their own */
    uint64_t released_timer; /* free spans idle for EBB_RELEASE_MS, given back */
    uint64_t released_cap;   /* free resident pages above the cap (EBB_FREE_RATIO) */
    uint64_t released_trade; /* given back while a request faulted pages in */
    uint64_t released_trim;  /* by malloc_trim */
    uint64_t released_soft;  /* by the soft limit (EBB_SOFT_LIMIT) */
    uint64_t released_live;  /* free pages inside live small-object spans */
    uint64_t faulted;        /* handed out from the released set: pages given back and new
                              * address space alike, which the kernel faults in when written */
    uint64_t refaulted;      /* of faulted: given back less than EBB_RELEASE_MS before (a
                              * lower bound: the last 64 releases are remembered) */
    uint64_t live_back;      /* pages of live spans taken back for their blocks */
};
void ebb_flow(struct ebb_flow *f);

/* The live stats page a process publishes (EBB_STATS_SHM=1, the default) so that
 * ebb-inspect can read it without stopping the process.  It is the file
 * /dev/shm/ebbmalloc.<ns>.<pid>, one page, kept mapped MAP_SHARED by the process (so it
 * shows in /proc/<pid>/maps) and unlinked at exit; <ns> is the inode number of the
 * process's PID namespace (the number in /proc/<pid>/ns/pid, 0 if the process could not
 * read it) and <pid> its pid in that namespace (the last NSpid of /proc/<pid>/status).
 * A reader trusts it only when the target's maps show that very file (same device and
 * inode), magic, version, pid and start_time match /proc/<pid>/stat, and seq is even
 * and unchanged across the read (seqlock: odd while the process writes).  With
 * EBB_SHM_LOCKED in flags, the process holds flock(LOCK_SH) on the file for as long as
 * it maps it: whoever obtains LOCK_EX knows the process is gone. */
#define EBB_SHM_MAGIC 0x3170616d73626265ull /* "ebbsmap1" little-endian */
#define EBB_SHM_VERSION 2                   /* 2: the flow counters after the stats; 1 ended at stats */
#define EBB_SHM_LOCKED 1u
struct ebb_shm_page {
    uint64_t magic;
    uint32_t version;
    uint32_t size; /* sizeof(struct ebb_shm_page) */
    int32_t pid;
    uint32_t flags;      /* EBB_SHM_LOCKED */
    uint64_t start_time; /* field 22 of /proc/<pid>/stat: clock ticks after boot */
    uint64_t seq;
    uint64_t updated_ms; /* CLOCK_REALTIME of the last update, in milliseconds */
    struct ebb_stats stats;
    struct ebb_flow flow; /* version 2 on */
};

/* The heap profile (EBB_PROF=1, the default): a sample of the allocations, one every
 * EBB_PROF_SAMPLE bytes on average (exponentially distributed intervals), each recorded
 * with its call stack.  Per distinct stack the table keeps estimated live bytes and
 * objects (each sample weighted so that the totals estimate all allocations, not only
 * the sampled ones) and estimated totals ever allocated.  The process publishes the
 * table in a file next to its stats page (same name plus ".heap"), mapped MAP_SHARED,
 * trusted by a reader under the same rules as the stats page.  Layout: the header, then
 * slot_count slots at header_size, then frames_cap uint64_t return addresses at
 * frames_offset.  A slot is in use when depth != 0 (published last, with release
 * ordering, after its hash, first and frames are written); its frames are
 * frames[first .. first + depth), innermost first, starting at the caller of the
 * allocation function.  Counters change while a reader reads: each is an aligned
 * 64-bit value, read once.  Frames are return addresses as found (subtract 1 to name
 * the call); the outermost may lie in memory no file backs (JIT code, where the walk
 * ends).  Slot 0, once in use, has one frame of value 0: it counts the samples whose
 * stack found no room (also counted in dropped) or could not be taken.  When the table
 * is full, a slot whose live objects all went may be given to a new stack (depth set
 * to 0 first, its counters start again from 0): a reader that reads hash, depth and
 * first again after the frames and finds one changed reads the slot again. */
#define EBB_PROF_MAGIC 0x3166727062626265ull /* "ebbprf1" little-endian */
#define EBB_PROF_VERSION 1
#define EBB_PROF_MAX_FRAMES 64
struct ebb_prof_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size; /* bytes from the start of the file to slot 0 */
    int32_t pid;
    uint32_t slot_count;      /* a power of two */
    uint64_t start_time;      /* as in struct ebb_shm_page */
    uint64_t sample_interval; /* mean bytes between samples */
    uint64_t frames_offset;   /* bytes from the start of the file to frame 0 */
    uint64_t frames_cap;      /* frames the area holds */
    uint64_t frames_used;     /* frames claimed so far */
    uint64_t samples;         /* allocations sampled since start */
    uint64_t dropped;         /* samples that found no slot or frame room (slot 0 has them) */
    uint64_t updated_ms;      /* CLOCK_REALTIME of the last change, milliseconds */
};
struct ebb_prof_slot {
    uint64_t hash;        /* of the frames; 0 while the slot is free */
    uint32_t depth;       /* frames; 0 until the slot is complete */
    uint32_t first;       /* index of its innermost frame in the frames area */
    int64_t live_bytes;   /* estimated bytes allocated from this stack and not freed */
    int64_t live_objects; /* estimated objects, the same way */
    uint64_t total_bytes; /* estimated bytes ever allocated from this stack */
    uint64_t total_objects;
};

#ifdef __cplusplus
}
#endif
#endif
