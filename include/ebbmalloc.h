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

/* Where ebbmalloc's memory is, in bytes.  The identities
 *     resident = in_use + thread_cache + central + page_free + metadata
 *     mapped   = resident + released
 * hold for every snapshot. */
struct ebb_stats {
    uint64_t in_use;        /* handed to the program (rounded up to size classes / pages) */
    uint64_t thread_cache;  /* free objects held in per-thread caches */
    uint64_t central;       /* free objects in central lists, transfer caches, uncarved span tails */
    uint64_t page_free;     /* free spans in the page heap whose pages are still resident */
    uint64_t released;      /* free spans returned to the kernel with madvise (not resident) */
    uint64_t metadata;      /* ebbmalloc's own bookkeeping (span records, page map, caches) */
    uint64_t resident;      /* in_use + thread_cache + central + page_free + metadata */
    uint64_t mapped;        /* resident + released: address space ebbmalloc holds */
    uint64_t peak_in_use;   /* high-water mark of in_use */
    uint64_t threads;       /* thread caches alive */
    uint64_t release_calls; /* madvise calls made to return memory */
    uint64_t released_total;/* bytes returned to the kernel since start */
    uint64_t cgroup_limit;  /* container memory limit found at start, 0 when none */
    uint64_t soft_limit;    /* EBB_SOFT_LIMIT in bytes, 0 when off */
    uint64_t idle_caches_emptied; /* caches of sleeping threads emptied since start */
};

/* Fill *st with a consistent snapshot.  Never allocates. */
void ebb_stats(struct ebb_stats *st);

/* The live stats page a process publishes (EBB_STATS_SHM=1, the default) so that
 * ebb-inspect can read it without stopping the process.  It is the file
 * /dev/shm/ebbmalloc.<pid>, one page, kept mapped MAP_SHARED by the process (so it
 * shows in /proc/<pid>/maps) and unlinked at exit.  A reader trusts it only when
 * the target's maps show that very file (same device and inode), magic, version,
 * pid and start_time match /proc/<pid>/stat, and seq is even and unchanged
 * across the read (seqlock: odd while the process writes). */
#define EBB_SHM_MAGIC 0x3170616d73626265ull /* "ebbsmap1" little-endian */
#define EBB_SHM_VERSION 1
struct ebb_shm_page {
    uint64_t magic;
    uint32_t version;
    uint32_t size;          /* sizeof(struct ebb_shm_page) */
    int32_t pid;
    uint32_t pad;
    uint64_t start_time;    /* field 22 of /proc/<pid>/stat: clock ticks after boot */
    uint64_t seq;
    uint64_t updated_ms;    /* CLOCK_REALTIME of the last update, in milliseconds */
    struct ebb_stats stats;
};

#ifdef __cplusplus
}
#endif
#endif
