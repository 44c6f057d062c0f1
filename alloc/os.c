/* os.c: everything ebbmalloc asks of the kernel.  Policy (when to release, how much)
 * lives elsewhere; these functions only do what they are told.  Convention: 0 or a
 * pointer on success, -1 or NULL on failure.  Nothing here allocates. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

/* Without MAP_NORESERVE: the kernel's overcommit policy refuses what glibc's malloc would
 * be refused (a request beyond RAM and swap under the default heuristic). */
static void *os_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void os_unmap(void *p, size_t size) { munmap(p, size); }

static int os_release(void *p, size_t size) {
    /* MADV_DONTNEED, not MADV_FREE: the resident set and the cgroup's usage drop now,
     * which is what container limits and their alerts look at. */
    return madvise(p, size, MADV_DONTNEED);
}

static void *os_remap(void *p, size_t old_size, size_t new_size, void *to) {
    void *q = to ? mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, to)
                 : mremap(p, old_size, new_size, 0);
    return q == MAP_FAILED ? NULL : q;
}

struct ebb_os_hooks ebbi_os = {os_map, os_unmap, os_release, os_remap};

/* A mapping of `size` bytes starting at a multiple of `align` (a power of two). */
void *ebbi_os_map_aligned(size_t size, size_t align) {
    if (align <= 4096) return ebbi_os.map(size);
    if (size + align < size) return NULL;
    char *p = ebbi_os.map(size + align);
    if (!p) return NULL;
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)p, tail = align - head;
    if (head) ebbi_os.unmap(p, head);
    if (tail) ebbi_os.unmap((char *)a + size, tail);
    return (void *)a;
}

void ebbi_os_hugepage_hint(void *p, size_t size, bool on) {
    madvise(p, size, on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

uint64_t ebbi_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t ebbi_random64(void) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&r ^
            ((uint64_t)getpid() << 32);
    }
    return r;
}

/* ---------------------------------------------------------------- futex lock */
void ebbi_lock_slow(ebb_lock_t *l) {
    for (int i = 0; i < 100; i++) {
        __builtin_ia32_pause();
        int z = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->v, &z, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
        syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

void ebbi_unlock_slow(ebb_lock_t *l) { syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

/* ---------------------------------------------------------------- messages
 * A small formatter (%s %d %u %zu %zd %lu %llu %x %p %%) so that error paths never
 * reach stdio, which may allocate or hold locks. */
static size_t put_num(char *b, size_t room, unsigned long long v, unsigned base, bool neg) {
    char tmp[24];
    size_t n = 0, out = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg && out < room) b[out++] = '-';
    while (n && out < room) b[out++] = tmp[--n];
    return out;
}

static int vformat(char *buf, size_t size, const char *fmt, va_list ap) {
    size_t o = 0;
    if (!size) return 0;
    size_t room = size - 1;
    for (const char *f = fmt; *f && o < room; f++) {
        if (*f != '%') {
            buf[o++] = *f;
            continue;
        }
        f++;
        int lng = 0;
        bool zsz = false;
        while (*f == 'l') lng++, f++;
        if (*f == 'z') zsz = true, f++;
        unsigned long long u;
        long long s;
        switch (*f) {
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str) str = "(null)";
            while (*str && o < room) buf[o++] = *str++;
            break;
        }
        case 'd':
            s = zsz ? (long long)va_arg(ap, ssize_t)
                    : lng ? va_arg(ap, long long) : va_arg(ap, int);
            o += put_num(buf + o, room - o, s < 0 ? -(unsigned long long)s : (unsigned long long)s,
                         10, s < 0);
            break;
        case 'u':
        case 'x':
            u = zsz ? va_arg(ap, size_t)
                    : lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
            o += put_num(buf + o, room - o, u, *f == 'x' ? 16 : 10, false);
            break;
        case 'p':
            u = (uintptr_t)va_arg(ap, void *);
            if (o + 2 <= room) buf[o++] = '0', buf[o++] = 'x';
            o += put_num(buf + o, room - o, u, 16, false);
            break;
        case '%': buf[o++] = '%'; break;
        default: buf[o++] = '?'; break;
        }
        if (!*f) break;
    }
    buf[o] = 0;
    return (int)o;
}

int ebbi_snprintf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vformat(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

void ebbi_write_err(const char *s, size_t n) { ebbi_write_fd(2, s, n); }

void ebbi_write_fd(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

void ebbi_fatal(const char *fmt, ...) {
    char buf[512];
    size_t o = (size_t)ebbi_snprintf(buf, sizeof buf, "ebbmalloc: ");
    va_list ap;
    va_start(ap, fmt);
    o += (size_t)vformat(buf + o, sizeof buf - o - 1, fmt, ap);
    va_end(ap);
    buf[o++] = '\n';
    ebbi_write_err(buf, o);
    abort();
}

/* ---------------------------------------------------------------- environment
 * Before libc has set `environ` (a malloc from the dynamic loader), read the
 * environment the kernel gave the process from /proc/self/environ instead. */
static char early_env[16384];
static size_t early_env_len;

size_t ebbi_read_file(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    return got;
}

const char *ebbi_getenv(const char *name) {
    size_t nl = strlen(name);
    if (environ) {
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, name, nl) && (*e)[nl] == '=') return *e + nl + 1;
        return NULL;
    }
    if (!early_env_len) early_env_len = ebbi_read_file("/proc/self/environ", early_env, sizeof early_env);
    for (size_t i = 0; i < early_env_len; i += strlen(early_env + i) + 1)
        if (!strncmp(early_env + i, name, nl) && early_env[i + nl] == '=') return early_env + i + nl + 1;
    return NULL;
}
