/* Waiting for a fork child with a deadline, for every test that forks from a threaded
 * parent: a child that does not end in time is killed and reported with what the kernel
 * says of it (state, CPU time, wait channel, system call, and the mapping of the word it
 * waits on), and a child stuck in an emulator's own lock is told from one stuck in
 * ebbmalloc's or libc's.
 *
 * Why the emulator case exists: under qemu-user 7.2 a fork child of a threaded parent
 * sometimes waits for ever, at 0 ticks of CPU before any code of its own, on a futex word
 * in libglib-2.0's data (qemu does not hold its own locks across fork; seen in CI in
 * test_threads and test_stress).  Such a child is recognised (ebb_waits_in_emulator) and
 * the caller forks again, EBB_EMULATOR_RETRIES times in a process at most, so that a
 * deadlock of ebbmalloc's or libc's still fails the test.  Natively every mapped program
 * is of this machine, so the case never arises and native runs stay strict.
 *
 * The deadline is EBB_TEST_CHILD_S seconds (20; tests/arm64.sh sets more under emulation).
 * Header-only (each test includes it once); /proc is read through lib/procfs. */
#ifndef EBB_TEST_FORK_H
#define EBB_TEST_FORK_H
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procfs.h"

enum { EBB_CHILD_HUNG = -1, EBB_CHILD_IN_EMULATOR = -2, EBB_EMULATOR_RETRIES = 6 };

/* The ELF machine of a file, or -1. */
static int ebb_elf_machine(const char *path) {
    unsigned char h[20];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(h, 1, sizeof h, f);
    fclose(f);
    if (n < sizeof h || memcmp(h, "\177ELF", 4)) return -1;
    return h[18] | h[19] << 8; /* e_machine, little-endian on every machine this runs on */
}

/* Whether the word a stopped child waits on (the first argument of its system call, sc
 * as /proc/PID/syscall prints it) lies in a mapped file that is no program of this
 * machine, or in the anonymous mapping right after one (its .bss): under an emulator
 * that is the emulator's own code and data.  A lock of ebbmalloc's, libc's or the
 * program's lies in memory of this machine's programs. */
static bool ebb_waits_in_emulator(pid_t pid, const char *sc) {
    unsigned long nr = 0, arg = 0;
    if (sscanf(sc, "%lu %lx", &nr, &arg) != 2) return false;
    char path[64], file[400];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    char *maps = NULL;
    size_t cap = 0;
    if (procfs_read(path, &maps, &cap, NULL) < 0) return false;
    bool emu = false;
    int mine = ebb_elf_machine("/proc/self/exe");
    struct procfs_map m;
    char before[400] = ""; /* the file of the mapping before, if it ends where m starts */
    unsigned long long before_end = 0;
    for (const char *cur = maps; procfs_maps_next(&cur, &m);) {
        if (arg < m.start || arg >= m.end) {
            if (m.path_len && m.path[0] == '/') {
                snprintf(before, sizeof before, "%.*s", (int)m.path_len, m.path);
                before_end = m.end;
            } else {
                before[0] = 0;
            }
            continue;
        }
        snprintf(file, sizeof file, "%.*s", (int)m.path_len, m.path);
        if (!file[0] && before[0] && before_end == m.start) snprintf(file, sizeof file, "%s", before);
        int k = file[0] ? ebb_elf_machine(file) : -1;
        emu = mine > 0 && k > 0 && k != mine;
        fprintf(stderr, "  %#lx is in %#llx-%#llx %s %s\n", arg, (unsigned long long)m.start,
                (unsigned long long)m.end, m.perms, file[0] ? file : "(anonymous)");
    }
    free(maps);
    return emu;
}

static long ebb_child_limit_ms(void) {
    const char *s = getenv("EBB_TEST_CHILD_S");
    long v = s && *s ? atol(s) : 0;
    return (v > 0 ? v : 20) * 1000;
}

/* The child's exit status (128 + signal if a signal ended it), EBB_CHILD_HUNG if it did
 * not end in time, EBB_CHILD_IN_EMULATOR if it was stuck in the emulator's own lock.
 * where(), when given, names the step the child had reached (read only on a hang). */
static int ebb_wait_child(pid_t pid, const char *(*where)(void)) {
    long limit_ms = ebb_child_limit_ms();
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > limit_ms) break;
        usleep(10000);
    }
    /* What the kernel says of it: state and CPU time (a spinning child runs, one that
     * waits sleeps), where it sleeps, and its system call. */
    char st[512] = "", wchan[64] = "", sc[128] = "", path[64];
    struct procfs_stat ps = {.state = '?'};
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (procfs_read_buf(path, st, sizeof st)) procfs_parse_stat(st, &ps);
    snprintf(path, sizeof path, "/proc/%d/wchan", (int)pid);
    procfs_read_buf(path, wchan, sizeof wchan);
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    procfs_read_buf(path, sc, sizeof sc);
    sc[strcspn(sc, "\n")] = 0;
    fprintf(stderr,
            "fork child %d did not end in %ld s, stuck at: %s (state %c, cpu %llu+%llu ticks, wchan %s, "
            "syscall %s)\n",
            (int)pid, limit_ms / 1000, where ? where() : "?", ps.state, (unsigned long long)ps.utime,
            (unsigned long long)ps.stime, wchan, sc);
    bool emulator = ebb_waits_in_emulator(pid, sc);
    if (emulator) fprintf(stderr, "  it waits for a lock of the emulator's own\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return emulator ? EBB_CHILD_IN_EMULATOR : EBB_CHILD_HUNG;
}

/* Whether a child that ebb_wait_child found in the emulator's lock may be forked again:
 * true EBB_EMULATOR_RETRIES times in the process.  Thread-safe. */
static bool ebb_emulator_retry(int rc) {
    static _Atomic int hangs;
    if (rc != EBB_CHILD_IN_EMULATOR || ++hangs > EBB_EMULATOR_RETRIES) return false;
    fprintf(stderr, "  forked again (%d of at most %d)\n", (int)hangs, EBB_EMULATOR_RETRIES);
    return true;
}

/* A process whose first thread ends with pthread_exit while a second still runs (for
 * 200 ms, then an allocation) must end when that one does: a forked child does that,
 * running `then` (if not NULL) once the second thread is started.  Returns
 * ebb_wait_child's verdict (0: it ended with status 0), forked again on the emulator's
 * hang. */
static void *ebb_linger_(void *arg) {
    (void)arg;
    usleep(200 * 1000);
    free(malloc(64));
    return NULL;
}
__attribute__((unused)) static int ebb_ends_after_pthread_exit(void (*then)(void)) {
    int rc;
    do {
        pid_t pid = fork();
        if (pid < 0) return EBB_CHILD_HUNG;
        if (pid == 0) {
            pthread_t c;
            if (pthread_create(&c, NULL, ebb_linger_, NULL)) _exit(4);
            if (then) then();
            pthread_exit(NULL);
        }
        rc = ebb_wait_child(pid, NULL);
    } while (ebb_emulator_retry(rc));
    return rc;
}
#endif
