/* Test helper for ebb-inspect: publishes an ebbmalloc stats page the way the library
 * does (/dev/shm/ebbmalloc.<ns>.<pid>, one page, mapped MAP_SHARED, seqlock), correct or
 * broken on purpose, prints "ready" and waits; on SIGTERM it removes the file.
 *
 *   fake-stats-page MODE
 *   ok         a valid page
 *   busy       a valid page that a thread rewrites all the time (seq odd while it
 *              writes): a reader must still see a consistent snapshot
 *   stale      the file exists with valid contents, but the process does not map it
 *   wrongpid   the page names another pid
 *   wrongstart the page carries another start_time
 *   oddseq     seq stays odd (a writer that died in the middle of an update)
 *   unwritten  the header is there, the first update is not (seq 0, every figure 0)
 *   badmagic   not an ebbmalloc page
 *   badsum     resident differs from the sum of its parts
 *   foreign    the file belongs to another user (nobody)
 *   replaced   the mapped file was unlinked and another one put at its name
 *
 * The valid figures: in_use 3 MiB, thread_cache 1 MiB, central 512 KiB, page_free
 * 2 MiB, metadata 256 KiB, released 8 MiB, threads 3. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ebbmalloc.h"
#include "fake_publish.h"

static char path[96];

static void on_term(int sig) {
    (void)sig;
    unlink(path);
    _exit(0);
}

static void fill(struct ebb_shm_page *pg, uint64_t k) {
    struct ebb_stats *s = &pg->stats;
    s->in_use = (3u << 20) + k * 4096;
    s->thread_cache = 1u << 20;
    s->central = 512u << 10;
    s->page_free = (2u << 20) + k * 8192;
    s->metadata = 256u << 10;
    s->resident = s->in_use + s->thread_cache + s->central + s->page_free + s->metadata;
    s->released = 8u << 20;
    s->mapped = s->resident + s->released;
    s->peak_in_use = s->in_use;
    s->threads = 3;
    s->release_calls = 7;
    s->released_total = 9u << 20;
    /* the flow: 9 MiB given back (4 idle, 2 over the cap, 1 traded, 2 of live spans),
     * 40 MiB of heap grown, 30 taken from released spans (3 refaults), 1 brought back */
    struct ebb_flow *w = &pg->flow;
    w->grown = 40u << 20;
    w->direct = 5u << 20;
    w->released_timer = 4u << 20;
    w->released_cap = 2u << 20;
    w->released_trade = 1u << 20;
    w->released_live = 2u << 20;
    w->faulted = 30u << 20;
    w->refaulted = 3u << 20;
    w->live_back = 1u << 20;
    pg->updated_ms = fake_now_ms();
}

static struct ebb_shm_page *create(const char *name, int *fdp) {
    struct ebb_shm_page *pg = fake_map_file(name, 4096, fdp);
    fake_stats_header(pg);
    fill(pg, 0);
    return pg;
}

static void *writer(void *arg) {
    struct ebb_shm_page *pg = arg;
    for (uint64_t k = 1;; k++) {
        __atomic_store_n(&pg->seq, pg->seq + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        fill(pg, k % 1000);
        __atomic_store_n(&pg->seq, pg->seq + 1, __ATOMIC_RELEASE);
        if (k % 16 == 0) usleep(20); /* a real writer pauses; never pausing would starve any reader */
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fake-stats-page MODE\n");
        return 2;
    }
    const char *mode = argv[1];
    snprintf(path, sizeof(path), "/dev/shm/ebbmalloc.%llu.%d", fake_pid_ns(), (int)getpid());
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    int fd;
    struct ebb_shm_page *pg = create(path, &fd);
    if (!strcmp(mode, "stale")) {
        munmap(pg, 4096);
    } else if (!strcmp(mode, "wrongpid")) {
        pg->pid = getpid() + 1;
    } else if (!strcmp(mode, "wrongstart")) {
        pg->start_time += 1;
    } else if (!strcmp(mode, "oddseq")) {
        pg->seq = 7;
    } else if (!strcmp(mode, "unwritten")) {
        memset(&pg->stats, 0, sizeof pg->stats);
        pg->updated_ms = 0;
        pg->seq = 0;
    } else if (!strcmp(mode, "badmagic")) {
        pg->magic ^= 1;
    } else if (!strcmp(mode, "badsum")) {
        pg->stats.resident += 64u << 20; /* beyond what a racy snapshot can be off by */
        pg->stats.mapped += 64u << 20;
    } else if (!strcmp(mode, "foreign")) {
        if (fchown(fd, 65534, 65534) < 0) {
            perror("fchown");
            return 1;
        }
    } else if (!strcmp(mode, "replaced")) {
        unlink(path);
        int fd2;
        struct ebb_shm_page *other = create(path, &fd2);
        other->stats.in_use = 0; /* inconsistent: must never be the one read */
        munmap(other, 4096);
        close(fd2);
    } else if (!strcmp(mode, "v1")) { /* an older library's page: no flow counters */
        memset(&pg->flow, 0xee, sizeof pg->flow);
        pg->version = 1;
        pg->size = offsetof(struct ebb_shm_page, flow);
    } else if (!strcmp(mode, "busy")) {
        pthread_t t;
        pthread_create(&t, NULL, writer, pg);
    } else if (strcmp(mode, "ok")) {
        fprintf(stderr, "fake-stats-page: unknown mode %s\n", mode);
        unlink(path);
        return 2;
    }
    close(fd);
    fake_serve();
}
