/* shm.c: the live stats page, /dev/shm/ebbmalloc.<ns>.<pid>, that ebb-inspect reads
 * without stopping the process (layout and trust rules: struct ebb_shm_page in
 * ebbmalloc.h).
 *
 * The page is one kernel page of a file (or as many as it takes), mapped MAP_SHARED (so
 * it shows in the process's maps, which is what a reader checks), written under a
 * seqlock: seq is odd while the writer fills it.  One writer at a time: whoever holds
 * release.c's `releasing` (the release thread, or a slow path in a process that has
 * none).  The file
 * is unlinked at exit; pages of processes that died without unlinking theirs are
 * removed when a process creates its own, under the rule at remove_if_stale.
 *
 * The name.  /dev/shm is shared by containers of one pod (a shared memory volume,
 * --ipc=shareable), and each container has its own PID namespace with its own PID 1, so
 * a pid alone names nothing.  <ns> is the inode number of the process's PID namespace
 * (/proc/self/ns/pid), which the kernel gives each live namespace uniquely, and <pid> is
 * the pid in that namespace, as getpid() says: the pair names one live process on the
 * machine.  Without /proc, <ns> is 0 ("unknown").
 *
 * The owner's lock.  The owner takes flock(LOCK_SH) on its file before it writes the
 * header, and sets EBB_SHM_LOCKED in it.  The lock belongs to the open file, which the
 * mapping keeps open after the descriptor is closed: it goes when the last mapping of
 * the owner (or of a child that has not yet let go of it after fork) goes, that is when
 * the owner exits, dies or execs.  So whoever obtains LOCK_EX on a page marked
 * EBB_SHM_LOCKED knows, from any PID namespace, that its owner is gone.
 *
 * Ordering (a reader runs in another process, on another CPU, with no lock between
 * them): the header is written before `magic`, which is stored with release ordering.
 * An update makes seq odd, then a release fence, then stores the data as relaxed 64-bit
 * atomic words, then makes seq even with a release store.  The reader (ebb-inspect's
 * copy_page) loads seq with acquire, the words relaxed, then an acquire fence, then seq
 * again: if any word it read came from an update, the writer's fence (before that word)
 * synchronises with the reader's fence (after it), so the odd seq of that update is
 * visible to the second load of seq, which then differs from the first, and the copy is
 * retried.  A copy that saw the same even seq twice holds the words of one update.  The
 * data is written word by word as atomics because a plain struct copy racing with the
 * reader's loads would not be ordered by the fences at all. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "internal.h"

/* Written by the release thread (with release ordering, after the path and size), read
 * by it and, at exit, by whichever thread runs the destructors (acquire). */
static struct ebb_shm_page *shm_page;
static size_t shm_size;
static char shm_path[80];
static int shm_pid; /* the process the page is named for (a fork child is not it) */
static _Atomic int shm_failed;

#define SHM_DIR "/dev/shm/"
#define SHM_BASE "ebbmalloc."

static uint64_t self_start_time(void) {
    char buf[1024];
    if (!ebbi_read_file("/proc/self/stat", buf, sizeof buf)) return 0;
    const char *p = ebbi_stat_field(buf, 22); /* starttime */
    if (!p) return 0;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

/* The inode of the caller's PID namespace; 0 if /proc cannot tell. */
static uint64_t pid_namespace(void) {
    struct ebb_file_id id;
    return ebbi_os_file_id("/proc/self/ns/pid", &id) ? id.ino : 0;
}

/* The one place the name is made (see the top of the file). */
static size_t page_name(char *buf, size_t n, uint64_t ns, int pid) {
    return (size_t)ebbi_snprintf(buf, n, SHM_DIR SHM_BASE "%llu.%d", (unsigned long long)ns, pid);
}

size_t ebbi_shm_name(char *buf, size_t n) { return page_name(buf, n, pid_namespace(), ebbi_os_getpid()); }

/* "ebbmalloc.<ns>.<pid>" (a page), "ebbmalloc.<ns>.<pid>.heap" (the heap profile, named
 * after the page) and "ebbmalloc.<ns>.<pid>.stale" (where the cleaner <ns>.<pid> moves
 * a file it removes: see remove_proven).  Anything else in /dev/shm is not ours to
 * judge: older versions' "ebbmalloc.<pid>" pages carry no namespace and no lock, so
 * nothing can show they are stale. */
enum shm_kind { SHM_PAGE, SHM_HEAP, SHM_ASIDE };
static bool parse_name(const char *name, uint64_t *ns, long *pid, enum shm_kind *kind) {
    if (strncmp(name, SHM_BASE, sizeof SHM_BASE - 1)) return false;
    const char *p = name + sizeof SHM_BASE - 1;
    char *e;
    if (*p < '0' || *p > '9') return false;
    *ns = strtoull(p, &e, 10);
    if (*e != '.' || e[1] < '0' || e[1] > '9') return false;
    *pid = strtol(e + 1, &e, 10);
    *kind = !*e ? SHM_PAGE : !strcmp(e, ".heap") ? SHM_HEAP : SHM_ASIDE;
    return *pid > 0 && (!*e || !strcmp(e, ".heap") || !strcmp(e, ".stale"));
}

/* The file at path, open (O_NONBLOCK: a FIFO planted there must not block us), if it is
 * a regular file; -1 otherwise. */
static int open_regular(const char *path, struct ebb_file_id *id) {
    int fd = ebbi_os_open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (!ebbi_os_fstat(fd, id) || !id->regular) {
        ebbi_os_close(fd);
        return -1;
    }
    return fd;
}

/* Proof that the page open at fd has no live owner: its header says the owner locked it,
 * and the lock is free (see the comment at the top).  A page without the mark (its
 * owner could not lock, or was still writing the header) proves nothing. */
static bool owner_gone(int fd, const struct ebb_file_id *id) {
    if (id->size < sizeof(struct ebb_shm_page) || ebbi_os_flock(fd, LOCK_EX | LOCK_NB)) return false;
    struct ebb_shm_page pg;
    bool gone = ebbi_os_pread(fd, &pg, sizeof pg, 0) == (long)sizeof pg && pg.magic == EBB_SHM_MAGIC &&
                (pg.flags & EBB_SHM_LOCKED);
    ebbi_os_flock(fd, LOCK_UN);
    return gone;
}

/* Removes the file at path, which is the file `id` (proven stale), and no other: a new
 * owner may have put its own page at that name since the proof.  So the file is first
 * moved to a name only this process uses (rename is atomic), checked there, and moved
 * back if it turns out to be another. */
static void remove_proven(const char *path, const struct ebb_file_id *id) {
    char aside[96];
    ebbi_snprintf(aside, sizeof aside, "%s.stale", shm_path);
    if (ebbi_os_rename(path, aside, false)) return;
    struct ebb_file_id now;
    int fd = open_regular(aside, &now);
    if (fd >= 0) ebbi_os_close(fd);
    if (fd >= 0 && now.dev == id->dev && now.ino == id->ino) ebbi_os_unlink(aside);
    else ebbi_os_rename(aside, path, true); /* not the proven file: back where it was */
}

/* Some process holds a lock on the file open at fd (a page's owner holds LOCK_SH). */
static bool lock_held(int fd) {
    if (ebbi_os_flock(fd, LOCK_EX | LOCK_NB)) return true;
    ebbi_os_flock(fd, LOCK_UN);
    return false;
}

/* The clean-up rule.  A file is removed only with proof that its owner is gone:
 *  1. it names the caller's own PID namespace and a pid that no process of it has (a
 *     namespace's processes are all visible from inside it; a namespace that died and
 *     whose inode number was reused took its processes with it); or
 *  2. (pages) its owner's lock is free, from any namespace (owner_gone).
 * A file a cleaner moved aside names the cleaner: left there when the cleaner died
 * between the move and the removal (a process that exits while its release thread
 * cleans), it held a file proven stale, unless it holds a page whose owner lives (one
 * that replaced the proven file, caught in the move): rule 1 for the cleaner, and no
 * lock held on it; or rule 2.
 * A page of another namespace whose owner lives is never removed, nor is one nobody can
 * judge (no mark, an unknown namespace, another user's). */
static bool remove_if_stale(int dirfd, const char *name, void *arg) {
    (void)dirfd;
    uint64_t self_ns = *(const uint64_t *)arg, ns;
    long pid;
    enum shm_kind kind;
    if (!parse_name(name, &ns, &pid, &kind)) return true;
    char path[sizeof SHM_DIR + 256];
    if (ebbi_snprintf(path, sizeof path, SHM_DIR "%s", name) >= (int)sizeof path - 1) return true;
    struct ebb_file_id id;
    int fd = open_regular(path, &id);
    if (fd < 0) return true;
    bool gone_here = self_ns && ns == self_ns && !ebbi_os_pid_alive((int)pid);
    bool stale = kind == SHM_HEAP   ? gone_here
                 : kind == SHM_PAGE ? gone_here || owner_gone(fd, &id)
                                    : (gone_here && !lock_held(fd)) || owner_gone(fd, &id);
    ebbi_os_close(fd);
    if (stale) remove_proven(path, &id);
    return true;
}

static bool shm_create(void) {
    uint64_t ns = pid_namespace();
    int pid = ebbi_os_getpid();
    page_name(shm_path, sizeof shm_path, ns, pid);
    ebbi_os_dir_each("/dev/shm", remove_if_stale, &ns);
    const int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW;
    int fd = ebbi_os_open(shm_path, flags, 0600), err = ebbi_os_error();
    if (fd < 0 && err == EEXIST) {
        /* With a known namespace the name is this process's alone: the file was left by
         * an earlier process with this pid (or by this one before an exec).  With an
         * unknown one, only proof will do. */
        struct ebb_file_id id;
        int old = ns ? -1 : open_regular(shm_path, &id);
        bool stale = ns || (old >= 0 && owner_gone(old, &id));
        if (old >= 0) ebbi_os_close(old);
        if (stale) {
            ebbi_os_unlink(shm_path);
            fd = ebbi_os_open(shm_path, flags, 0600);
            err = ebbi_os_error();
        }
    }
    if (fd < 0) {
        char what[128];
        ebbi_snprintf(what, sizeof what, "cannot create %s", shm_path);
        ebbi_os_refused(EBB_REFUSED_SHM, what, err);
        return false;
    }
    /* Blocking: a cleaner holds LOCK_EX on it only while it reads the header. */
    int r;
    while ((r = ebbi_os_flock(fd, LOCK_SH)) && ebbi_os_error() == EINTR) {}
    bool locked = r == 0;
    /* whole kernel pages (one of 4 KiB or more holds it) */
    size_t kp = ebbi_os_page_size(), size = (sizeof(struct ebb_shm_page) + kp - 1) & ~(kp - 1);
    void *p = NULL;
    const char *failed = "cannot size";
    /* Backed before it is mapped: on a full tmpfs (a container's small /dev/shm) the
     * first store into a page ftruncate only promised would raise SIGBUS, which on the
     * release thread (every signal blocked) kills the process.  A page that cannot be
     * backed is refused like one that cannot be created.  Where fallocate itself is not
     * to be had (a filesystem without it, a seccomp allow-list) the page is mapped as
     * before. */
    if (ebbi_os_ftruncate(fd, size) == 0) {
        failed = "cannot back";
        if (ebbi_os_fallocate(fd, 0, size) == 0 || (ebbi_os_error() != ENOSPC && ebbi_os_error() != EDQUOT)) {
            failed = "cannot map";
            p = ebbi_os_map_shared(fd, size);
        }
    }
    err = ebbi_os_error();
    ebbi_os_close(fd);
    if (!p) {
        ebbi_os_unlink(shm_path);
        char what[128];
        ebbi_snprintf(what, sizeof what, "%s %s", failed, shm_path);
        ebbi_os_refused(EBB_REFUSED_SHM, what, err);
        return false;
    }
    struct ebb_shm_page *pg = p;
    pg->version = EBB_SHM_VERSION;
    pg->size = sizeof *pg;
    pg->pid = pid;
    pg->flags = locked ? EBB_SHM_LOCKED : 0;
    pg->start_time = self_start_time();
    __atomic_store_n(&pg->magic, EBB_SHM_MAGIC, __ATOMIC_RELEASE); /* header first */
    shm_size = size;
    shm_pid = pid;
    __atomic_store_n(&shm_page, pg, __ATOMIC_RELEASE);
    return true;
}

void ebbi_shm_publish(void) {
    if (!ebbi_opt(EBB_OPT_STATS_SHM) || atomic_load(&shm_failed)) return;
    /* The parent's page, still mapped in a fork child whose fork handlers left it alone
     * (a fork from a signal handler inside ebbmalloc, or a child made without them):
     * this process does not write it, it makes its own. */
    if (shm_page && shm_pid != ebbi_os_getpid()) {
        ebbi_os.unmap(shm_page, shm_size);
        __atomic_store_n(&shm_page, NULL, __ATOMIC_RELAXED);
    }
    if (!shm_page && !shm_create()) {
        atomic_store(&shm_failed, 1);
        return;
    }
    struct {
        struct ebb_stats st;
        struct ebb_flow flow;
    } w;
    ebb_stats(&w.st);
    ebb_flow(&w.flow);
    /* The seqlock writer (see the top of the file). */
    uint64_t seq = __atomic_load_n(&shm_page->seq, __ATOMIC_RELAXED); /* the only writer */
    __atomic_store_n(&shm_page->seq, seq + 1, __ATOMIC_RELAXED);      /* odd: writing */
    atomic_thread_fence(memory_order_release);
    __atomic_store_n(&shm_page->updated_ms, ebbi_realtime_ms(), __ATOMIC_RELAXED);
    _Static_assert(sizeof w == sizeof(struct ebb_shm_page) - offsetof(struct ebb_shm_page, stats) &&
                       sizeof w % 8 == 0,
                   "the stats and the flow end the page, in whole 64-bit words");
    uint64_t *to = (uint64_t *)(void *)&shm_page->stats;
    const uint64_t *from = (const uint64_t *)(const void *)&w;
    for (size_t i = 0; i < sizeof w / 8; i++) __atomic_store_n(&to[i], from[i], __ATOMIC_RELAXED);
    __atomic_store_n(&shm_page->seq, seq + 2, __ATOMIC_RELEASE); /* even: done */
}

void ebbi_shm_fork_child(void) {
    /* The parent's page is shared with us: let go of it; the child makes its own. */
    if (shm_page) ebbi_os.unmap(shm_page, shm_size);
    shm_page = NULL;
    atomic_store(&shm_failed, 0);
}

void ebbi_shm_unlink(void) {
    struct ebb_shm_page *pg = __atomic_load_n(&shm_page, __ATOMIC_ACQUIRE);
    if (pg && pg->pid == ebbi_os_getpid()) ebbi_os_unlink(shm_path);
}

/* For the heap profile's header, which names its process the way the page does. */
uint64_t ebbi_shm_start_time(void) { return self_start_time(); }
