/* misuse_corpus: runs every case of misuse_cases.h in its own process (misuse_helper)
 * and checks what happened.  Output is TAP.
 *
 *   misuse_corpus HELPER              ebbmalloc (LD_PRELOAD=$EBB_LIB), the cases ebbmalloc
 *                                     stops today; fails unless each one died of SIGABRT
 *                                     after exactly one line "ebbmalloc: FUNC: FAULT ...
 *                                     ADDR ... CLASS" on stderr
 *   misuse_corpus HELPER --pending    the same checks on the cases it does not stop yet
 *   misuse_corpus HELPER --all        both
 *   misuse_corpus HELPER --table      every case under ebbmalloc and under plain glibc,
 *                                     printed as a Markdown table (never fails)
 *   ... --repeat N                    run each case N times (the secret and the heap
 *                                     layout change each time); ok only if all pass
 *   ... [CASE...]                     only the named cases
 *
 * EBB_LIB is the path of libebbmalloc.so (meson's test environment sets it). */
#define _GNU_SOURCE
#include <errno.h>
#include <gnu/libc-version.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "misuse_cases.h"

struct outcome {
    int status;     /* from waitpid; -1 when it hung and was killed */
    char out[4096]; /* helper's stdout */
    char err[4096]; /* helper's stderr */
};

static const char *helper, *ebb_lib;

static void run_case(const char *name, bool under_ebb, struct outcome *o) {
    int po[2], pe[2];
    memset(o, 0, sizeof *o);
    if (pipe(po) || pipe(pe)) {
        perror("pipe");
        exit(2);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        unsetenv("MALLOC_CHECK_");
        unsetenv("GLIBC_TUNABLES");
        if (under_ebb) setenv("LD_PRELOAD", ebb_lib, 1);
        else unsetenv("LD_PRELOAD");
        /* No heap-profile samples: a sampled block takes a span of its own, and the cases
         * that name a block's class or place would then, once in a few hundred runs, meet
         * a different block than they set up.  The misuse of sampled blocks has its own
         * test (test_profile_unit). */
        setenv("EBB_PROF", "0", 1);
        execl(helper, helper, name, (char *)NULL);
        _exit(127);
    }
    close(po[1]), close(pe[1]);
    size_t no = 0, ne = 0;
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (open_fds) {
        int r = poll(fds, 2, 1000);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 30) break;
        if (r <= 0) continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents) continue;
            char *buf = i ? o->err : o->out;
            size_t *n = i ? &ne : &no;
            ssize_t got = read(fds[i].fd, buf + *n, sizeof o->out - 1 - *n);
            if (got > 0) {
                *n += (size_t)got;
            } else if (got == 0 || errno != EINTR) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0) close(fds[i].fd);
    int status;
    if (open_fds) { /* hung */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        o->status = -1;
    } else {
        waitpid(pid, &status, 0);
        o->status = status;
    }
}

/* "SIGABRT", "SIGSEGV", "exit 0", "hung" */
static const char *how(const struct outcome *o, char *buf, size_t n) {
    if (o->status == -1) snprintf(buf, n, "hung");
    else if (WIFSIGNALED(o->status)) snprintf(buf, n, "SIG%s", sigabbrev_np(WTERMSIG(o->status)));
    else snprintf(buf, n, "exit %d", WEXITSTATUS(o->status));
    return buf;
}

/* The first line of s starting at the first occurrence of `start` (or of s), without its
 * newline. */
static void first_line(const char *s, const char *start, char *buf, size_t n) {
    const char *p = start ? strstr(s, start) : s;
    if (!p) p = s;
    size_t k = strcspn(p, "\n");
    if (k >= n) k = n - 1;
    memcpy(buf, p, k);
    buf[k] = 0;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Does `line` contain `addr` as a whole number (not the prefix of a longer one)? */
static bool has_addr(const char *line, const char *addr) {
    size_t k = strlen(addr);
    for (const char *p = strstr(line, addr); p; p = strstr(p + 1, addr)) {
        char c = p[k];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        if (!hex) return true;
    }
    return false;
}

static bool has_any_addr(const char *line, char addr[][64], int n) {
    for (int i = 0; i < n; i++)
        if (has_addr(line, addr[i])) return true;
    return false;
}

/* Does line contain one of the '|'-separated alternatives of want? */
static bool has_one_of(const char *line, const char *want) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", want);
    for (char *save = NULL, *alt = strtok_r(buf, "|", &save); alt; alt = strtok_r(NULL, "|", &save))
        if (strstr(line, alt)) return true;
    return false;
}

/* Checks one case under ebbmalloc.  Returns NULL when it passed, else why not. */
static const char *check(const struct misuse_case *c, const struct outcome *o, char *why, size_t n) {
    char addr[4][64] = {""}, line[512], h[32];
    const char *a = strstr(o->out, "ADDR ");
    int naddr = 0;
    for (const char *x = a; x && naddr < 4; x = strstr(x + 5, "ADDR "))
        if (sscanf(x + 5, "%63s", addr[naddr]) == 1) naddr++;
    if (!naddr) {
        snprintf(why, n, "the helper printed no address (%s)", how(o, h, sizeof h));
        return why;
    }
    first_line(o->err, NULL, line, sizeof line);
    if (o->status == -1 || !WIFSIGNALED(o->status) || WTERMSIG(o->status) != SIGABRT) {
        char out[200];
        first_line(o->out, "SURVIVED", out, sizeof out);
        if (!strstr(o->out, "SURVIVED")) first_line(o->out, "CORRUPTION", out, sizeof out);
        snprintf(why, n, "expected SIGABRT, got %s; stderr: \"%s\"; helper: \"%s\"", how(o, h, sizeof h),
                 line, a ? out : "");
        return why;
    }
    char want[128];
    snprintf(want, sizeof want, "ebbmalloc: %s: ", c->func);
    if (count_lines(o->err) != 1 || strncmp(line, want, strlen(want)))
        snprintf(why, n, "expected one line starting \"%s\", got \"%.300s\"", want, o->err);
    else if (!has_one_of(line, c->fault))
        snprintf(why, n, "fault \"%s\" not named in \"%s\"", c->fault, line);
    else if (!has_any_addr(line, addr, naddr))
        snprintf(why, n, "address %s not named in \"%s\"", addr[0], line);
    else if (c->cls && !has_one_of(line, c->cls))
        snprintf(why, n, "class \"%s\" not named in \"%s\"", c->cls, line);
    else return NULL;
    return why;
}

/* One table cell: how the process ended and what it said. */
static void describe(const struct outcome *o, char *buf, size_t n) {
    char h[32], line[300];
    how(o, h, sizeof h);
    if (o->err[0]) {
        first_line(o->err, NULL, line, sizeof line);
        snprintf(buf, n, "%s: `%s`", h, line);
    } else if (strstr(o->out, "CORRUPTION")) {
        first_line(o->out, "CORRUPTION", line, sizeof line);
        snprintf(buf, n, "%s, no message; %s", h, line);
    } else if (strstr(o->out, "SURVIVED")) {
        first_line(o->out, "SURVIVED", line, sizeof line);
        snprintf(buf, n, "%s, no message (%s)", h, line + strlen("SURVIVED: "));
    } else {
        snprintf(buf, n, "%s, no message", h);
    }
    /* Addresses differ from run to run: show them as 0xADDR. */
    for (char *p = strstr(buf, "0x"); p; p = strstr(p + 1, "0x")) {
        char *e = p + 2;
        while ((*e >= '0' && *e <= '9') || (*e >= 'a' && *e <= 'f')) e++;
        if (e - p > 6) {
            memmove(p + 6, e, strlen(e) + 1);
            memcpy(p, "0xADDR", 6);
        }
    }
}

int main(int argc, char **argv) {
    bool table = false, pending = false, regular = true;
    int repeat = 1;
    const char *only[64];
    int nonly = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--table")) table = true;
        else if (!strcmp(argv[i], "--pending")) pending = true, regular = false;
        else if (!strcmp(argv[i], "--all")) pending = true, regular = true;
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (!helper) helper = argv[i];
        else if (nonly < 64) only[nonly++] = argv[i];
    }
    ebb_lib = getenv("EBB_LIB");
    if (!helper || !ebb_lib || access(ebb_lib, R_OK) || access(helper, X_OK)) {
        fprintf(stderr, "usage: EBB_LIB=.../libebbmalloc.so misuse_corpus HELPER "
                        "[--pending|--all|--table] [CASE...]\n");
        return 2;
    }
    if (table) {
        printf("| misuse | ebbmalloc | glibc %s |\n|---|---|---|\n", gnu_get_libc_version());
    } else {
        int planned = 0;
        for (size_t i = 0; i < MISUSE_NCASES; i++) {
            const struct misuse_case *c = &misuse_cases[i];
            bool named = !nonly;
            for (int k = 0; k < nonly; k++) named |= !strcmp(only[k], c->name);
            planned += named && (c->pending ? pending : regular);
        }
        printf("1..%d\n", planned);
    }
    int failed = 0, num = 0;
    for (size_t i = 0; i < MISUSE_NCASES; i++) {
        const struct misuse_case *c = &misuse_cases[i];
        bool named = !nonly;
        for (int k = 0; k < nonly; k++) named |= !strcmp(only[k], c->name);
        if (!named) continue;
        struct outcome o;
        if (table) {
            char e[400], g[400];
            run_case(c->name, true, &o);
            describe(&o, e, sizeof e);
            run_case(c->name, false, &o);
            describe(&o, g, sizeof g);
            printf("| %s%s | %s | %s |\n", c->pending ? "*pending:* " : "", c->what, e, g);
            fflush(stdout);
            continue;
        }
        if (c->pending ? !pending : !regular) continue;
        char why[1024], first_why[1024] = "", line[512] = "";
        int passes = 0;
        for (int k = 0; k < repeat; k++) {
            run_case(c->name, true, &o);
            const char *bad = check(c, &o, why, sizeof why);
            if (!bad) {
                passes++;
                if (!line[0]) first_line(o.err, NULL, line, sizeof line);
            } else if (!first_why[0]) {
                snprintf(first_why, sizeof first_why, "%s", bad);
            }
        }
        char count[32] = "";
        if (repeat > 1) snprintf(count, sizeof count, " [%d/%d]", passes, repeat);
        num++;
        if (passes < repeat) {
            failed++;
            printf("not ok %d - %s%s%s: %s\n", num, c->name, c->pending ? " (pending)" : "", count,
                   first_why);
        } else {
            printf("ok %d - %s%s: %s\n", num, c->name, count, line);
        }
        fflush(stdout);
    }
    return failed ? 1 : 0;
}
