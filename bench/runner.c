/* Runs one workload under one configuration: starts the child with the
 * configuration's environment, checks that the configuration took effect once
 * the child says "ready", samples its RSS and maps on a fixed interval, and
 * collects what the workload reports on its standard output. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct ctx {
    const struct bench_spec *sp;
    const struct bench_config *cfg;
    struct bench_run *r;
    pid_t pid;
    uint64_t t0;
    int in_fd;
    enum bench_phase phase;
    uint64_t live;
    bool ready, checked, killed;
    int64_t drop_deadline;
    int64_t idle_rss_kib; /* the idle period's last sample, -1 before one */
    uint32_t idle_rss_ms; /* when it was taken */
    char *buf;            /* /proc reads */
    size_t cap, len;
    char line[8192];
    size_t line_len;
    char err_tail[1024];
    size_t err_len;
};

static const char *phase_name(enum bench_phase p) {
    switch (p) {
    case PH_START: return "start";
    case PH_LOAD: return "load";
    case PH_IDLE: return "idle";
    case PH_END: return "end";
    }
    return "?";
}

static void push_sample(struct bench_run *r, const struct bench_sample *s) {
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 1024;
        struct bench_sample *ns = realloc(r->s, nc * sizeof *ns);
        if (!ns) return;
        r->s = ns;
        r->cap = nc;
    }
    r->s[r->n++] = *s;
}

/* Reads status and maps once; returns false when the process is gone. */
static bool take_sample(struct ctx *c, struct bench_sample *out) {
    char path[64];
    memset(out, 0, sizeof *out);
    out->t_ms = (uint32_t)(mono_ms() - c->t0);
    out->phase = (uint8_t)c->phase;
    out->live = c->live;
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->pid);
    if (procfs_read(path, &c->buf, &c->cap, &c->len) != 0) return false;
    long long rss = procfs_field_kib(c->buf, "VmRSS");
    long long anon = procfs_field_kib(c->buf, "RssAnon");
    if (rss < 0) return false; /* a zombie has no VmRSS */
    out->rss_kib = (uint32_t)rss;
    out->anon_kib = anon < 0 ? 0 : (uint32_t)anon;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->pid);
    if (procfs_read(path, &c->buf, &c->cap, &c->len) == 0) {
        int h = procfs_count_heaps(c->buf);
        out->heaps = h < 0 ? 0 : (uint16_t)h;
    }
    return true;
}

static void record(struct ctx *c, const struct bench_sample *s) {
    struct bench_run *r = c->r;
    if (!c->sp->no_samples) push_sample(r, s);
    if (s->rss_kib > r->peak_rss_kib) r->peak_rss_kib = s->rss_kib;
    if (s->heaps > r->heaps_max) r->heaps_max = s->heaps;
    r->heaps_end = s->heaps;
    if (s->phase == PH_IDLE) c->idle_rss_kib = s->rss_kib, c->idle_rss_ms = s->t_ms;
    if (c->sp->progress) {
        struct bench_status st = {s->t_ms / 1000.0, s->rss_kib, c->live, s->heaps, phase_name(c->phase)};
        c->sp->progress(c->sp->progress_arg, &st);
    }
}

static void sample_now(struct ctx *c) {
    struct bench_sample s;
    if (take_sample(c, &s)) record(c, &s);
}

static void kill_child(struct ctx *c) {
    if (!c->killed) {
        kill(c->pid, SIGKILL);
        c->killed = true;
    }
}

/* The workload is ready: is the configuration in force? */
static void check_now(struct ctx *c) {
    char path[64];
    char *environ_buf = NULL;
    size_t ecap = 0, elen = 0;
    c->checked = true;
    snprintf(path, sizeof path, "/proc/%d/environ", (int)c->pid);
    bool have_env = procfs_read(path, &environ_buf, &ecap, &elen) == 0;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->pid);
    bool have_maps = procfs_read(path, &c->buf, &c->cap, &c->len) == 0;
    struct bench_evidence ev = {
        have_maps ? c->buf : NULL,
        have_env ? environ_buf : NULL,
        elen,
        c->r->malloc_from[0] ? c->r->malloc_from : NULL,
    };
    char why[400];
    if (!bench_check_config(c->cfg, &ev, why, sizeof why)) {
        c->r->refused = true;
        snprintf(c->r->reason, sizeof c->r->reason, "refused: %s", why);
        kill_child(c);
    }
    free(environ_buf);
}

bool bench_kv_u64(const char *text, const char *key, uint64_t *out) {
    size_t kl = strlen(key);
    for (const char *p = text; (p = strstr(p, key)) != NULL; p += kl) {
        bool at_token = p == text || p[-1] == ' ' || p[-1] == '\t';
        if (!at_token || p[kl] != '=') continue;
        char *end;
        unsigned long long v = strtoull(p + kl + 1, &end, 10);
        if (end == p + kl + 1) return false;
        *out = v;
        return true;
    }
    return false;
}

bool bench_parse_result(const char *args, struct bench_result *out) {
    unsigned long long ops, ns;
    int used = 0;
    memset(out, 0, sizeof *out);
    if (sscanf(args, "%31s %llu %llu%n", out->name, &ops, &ns, &used) != 3) return false;
    out->ops = ops;
    out->ns = ns;
    const char *rest = args + used;
    out->has_faults = bench_kv_u64(rest, "minflt", &out->minflt);
    bench_kv_u64(rest, "majflt", &out->majflt);
    bench_kv_u64(rest, "bytes", &out->bytes);
    return true;
}

bool bench_parse_ebbstats(const char *args, enum bench_moment *when, struct bench_ebbstats *out) {
    static const char *const moments[BM_COUNT] = {"peak", "live", "after", "end"};
    char w[16];
    if (sscanf(args, "%15s", w) != 1) return false;
    int m = -1;
    for (int i = 0; i < BM_COUNT; i++)
        if (strcmp(w, moments[i]) == 0) m = i;
    if (m < 0) return false;
    memset(out, 0, sizeof *out);
    bool ok = bench_kv_u64(args, "resident", &out->resident);
    bench_kv_u64(args, "rss_kib", &out->rss_kib);
    bench_kv_u64(args, "own_kib", &out->own_kib);
    bench_kv_u64(args, "in_use", &out->in_use);
    bench_kv_u64(args, "thread_cache", &out->thread_cache);
    bench_kv_u64(args, "central", &out->central);
    bench_kv_u64(args, "page_free", &out->page_free);
    bench_kv_u64(args, "released", &out->released);
    bench_kv_u64(args, "metadata", &out->metadata);
    out->have = ok;
    *when = (enum bench_moment)m;
    return ok;
}

static void on_ready(struct ctx *c) {
    c->ready = true;
    check_now(c);
    if (!c->r->refused) {
        sample_now(c);
        if (c->sp->sync && c->in_fd >= 0) {
            ssize_t w = write(c->in_fd, "g", 1);
            (void)w;
        }
    }
}

static void on_live(struct ctx *c, const char *v, bool is_peak) {
    struct bench_run *r = c->r;
    long long b = strtoll(v, NULL, 10);
    r->has_live = true;
    if (is_peak) {
        if (b > 0 && (uint64_t)b > r->peak_live) r->peak_live = (uint64_t)b;
        return;
    }
    c->live = b < 0 ? 0 : (uint64_t)b;
    if (c->live > r->peak_live) r->peak_live = c->live;
}

static void on_phase(struct ctx *c, const char *name, uint64_t now) {
    struct bench_run *r = c->r;
    if (strcmp(name, "load-start") == 0) {
        struct bench_sample s;
        c->phase = PH_LOAD;
        r->t_load_ms = (int64_t)now;
        if (take_sample(c, &s)) {
            record(c, &s);
            r->rss_load_kib = s.rss_kib;
        }
    } else if (strcmp(name, "drop") == 0) {
        c->phase = PH_IDLE;
        r->t_drop_ms = (int64_t)now;
        c->drop_deadline = (int64_t)now + c->sp->drop_after_ms;
        sample_now(c);
    } else if (strcmp(name, "end") == 0) {
        struct bench_sample s;
        c->phase = PH_END;
        r->t_end_ms = (int64_t)now;
        if (take_sample(c, &s)) {
            record(c, &s);
            r->rss_end_kib = s.rss_kib;
        } else if (c->idle_rss_kib >= 0 &&
                   mono_ms() - c->t0 - c->idle_rss_ms <=
                       2 * (uint64_t)(c->sp->interval_ms ? c->sp->interval_ms : 100)) {
            /* it exited before its status was read (a loaded machine): the idle
             * period's last sample, if it was taken within two intervals of the end */
            r->rss_end_kib = c->idle_rss_kib;
        }
    }
}

static void add_result(struct bench_run *r, const struct bench_result *res) {
    if (r->n_res < BENCH_MAX_RESULTS) r->res[r->n_res++] = *res;
}

/* A line of the program a launcher exec'd: its own format, or nothing. */
static void foreign_line(struct ctx *c, const char *line) {
    struct bench_result res;
    memset(&res, 0, sizeof res);
    if (c->sp->parse_line(line, &res)) add_result(c->r, &res);
}

static void handle_line(struct ctx *c, char *line) {
    struct bench_run *r = c->r;
    uint64_t now = mono_ms() - c->t0;
    if (c->sp->parse_line && c->phase == PH_LOAD) {
        foreign_line(c, line);
        return;
    }
    char *args = strchr(line, ' ');
    if (args) *args++ = '\0';
    else args = line + strlen(line);
    if (strcmp(line, "ready") == 0) {
        on_ready(c);
    } else if (strcmp(line, "malloc-from") == 0) {
        snprintf(r->malloc_from, sizeof r->malloc_from, "%s", args);
    } else if (strcmp(line, "live") == 0) {
        const char *v = strchr(args, ' '); /* after the workload's own clock */
        if (v) on_live(c, v + 1, false);
    } else if (strcmp(line, "live-peak") == 0) {
        on_live(c, args, true);
    } else if (strcmp(line, "phase") == 0) {
        char name[32];
        if (sscanf(args, "%31s", name) == 1) on_phase(c, name, now);
    } else if (strcmp(line, "result") == 0) {
        struct bench_result res;
        if (bench_parse_result(args, &res)) add_result(r, &res);
    } else if (strcmp(line, "ebbstats") == 0) {
        enum bench_moment m;
        struct bench_ebbstats e;
        if (bench_parse_ebbstats(args, &m, &e)) r->ebb[m] = e;
    }
}

/* The workload's stdout: whole lines to handle_line. */
static void take_stdout(struct ctx *c, const char *buf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (ch == '\n') {
            c->line[c->line_len] = '\0';
            handle_line(c, c->line);
            c->line_len = 0;
        } else if (c->line_len < sizeof c->line - 1) {
            c->line[c->line_len++] = ch;
        }
    }
}

/* Its stderr: the last bytes kept for messages. */
static void take_stderr(struct ctx *c, const char *buf, size_t n) {
    size_t keep = sizeof c->err_tail - 1;
    for (size_t i = 0; i < n; i++) {
        if (c->err_len == keep) {
            memmove(c->err_tail, c->err_tail + keep / 2, keep - keep / 2);
            c->err_len = keep - keep / 2;
        }
        c->err_tail[c->err_len++] = buf[i];
    }
    c->err_tail[c->err_len] = '\0';
}

/* Reads what the non-blocking fd has now into take; false once it is closed. */
static bool drain(struct ctx *c, int fd, void (*take)(struct ctx *, const char *, size_t)) {
    char tmp[4096];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK; /* open, nothing more now */
        }
        if (n == 0) return false;
        take(c, tmp, (size_t)n);
    }
}

/* The first stderr line that mentions LD_PRELOAD (ld.so's complaint), if any. */
static void append_ldso_message(struct ctx *c) {
    const char *p = strstr(c->err_tail, "LD_PRELOAD");
    if (!p) return;
    const char *s = p;
    while (s > c->err_tail && s[-1] != '\n') s--;
    const char *e = strchr(p, '\n');
    int n = e ? (int)(e - s) : (int)strlen(s);
    size_t l = strlen(c->r->reason);
    snprintf(c->r->reason + l, sizeof c->r->reason - l, " [child said: %.*s]", n, s);
}

/* After the launcher exec'd sp->exec_path: once /proc/PID/exe names it and the C
 * library is mapped (ld.so maps preloaded libraries before the needed ones), the
 * configuration is checked again on the new maps (malloc-from is the launcher's and
 * does not apply).  Returns true when there is nothing more to do. */
static bool recheck_exec(struct ctx *c) {
    char path[64], exe[PATH_MAX], want[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)c->pid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0) return false;
    exe[n] = '\0';
    const char *w = realpath(c->sp->exec_path, want) ? want : c->sp->exec_path;
    if (strcmp(exe, w) != 0) return false;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->pid);
    if (procfs_read(path, &c->buf, &c->cap, &c->len) != 0 || !strstr(c->buf, "/libc.so")) return false;
    c->r->malloc_from[0] = '\0';
    check_now(c);
    c->r->rechecked = true;
    return true;
}

/* Forks and execs the workload with the configuration's environment and pipes for its
 * standard streams.  Returns 0, or 1 with the reason in r. */
static int start_child(struct ctx *c, int *out_fd, int *err_fd) {
    struct bench_run *r = c->r;
    char **env = bench_child_env(c->sp->environ, c->cfg);
    if (!env) {
        snprintf(r->reason, sizeof r->reason, "out of memory");
        return 1;
    }
    int out[2], err[2], in[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) {
        snprintf(r->reason, sizeof r->reason, "pipe: %s", strerror(errno));
        bench_free_env(env);
        return 1;
    }
    fflush(NULL);
    c->t0 = mono_ms();
    c->pid = fork();
    if (c->pid < 0) {
        snprintf(r->reason, sizeof r->reason, "fork: %s", strerror(errno));
        bench_free_env(env);
        return 1;
    }
    if (c->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execvpe(c->sp->argv[0], c->sp->argv, env);
        dprintf(2, "cannot run %s: %s\n", c->sp->argv[0], strerror(errno));
        _exit(127);
    }
    bench_free_env(env);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    c->in_fd = in[1];
    *out_fd = out[0];
    *err_fd = err[0];
    return 0;
}

/* How long poll may sleep: until the next sample, the "2 s after load" sample, or soon
 * while an exec'd program is still to be checked. */
static int poll_wait(const struct ctx *c, uint64_t next_sample, uint64_t now) {
    int64_t wait = (int64_t)next_sample - (int64_t)now;
    if (c->drop_deadline >= 0 && c->r->rss_after_kib < 0 && c->drop_deadline - (int64_t)now < wait)
        wait = c->drop_deadline - (int64_t)now;
    if (c->sp->exec_path && c->ready && !c->r->rechecked && wait > 5) wait = 5;
    return wait < 0 ? 0 : (int)wait;
}

/* The samples due now: the one 2 s after the load, and the periodic one. */
static void sample_due(struct ctx *c, uint64_t *next_sample, uint64_t interval) {
    struct bench_run *r = c->r;
    uint64_t now = mono_ms() - c->t0;
    if (c->drop_deadline >= 0 && r->rss_after_kib < 0 && (int64_t)now >= c->drop_deadline) {
        struct bench_sample s;
        if (take_sample(c, &s)) {
            record(c, &s);
            r->rss_after_kib = s.rss_kib;
        }
    }
    if (now >= *next_sample) {
        if (c->ready && !c->sp->no_samples && c->phase != PH_END) /* not the exit teardown */
            sample_now(c);
        while (*next_sample <= now) *next_sample += interval;
    }
}

/* Reads the child's output and samples it until both its streams close. */
static void watch(struct ctx *c, int out_fd, int err_fd) {
    const struct bench_spec *sp = c->sp;
    struct bench_run *r = c->r;
    bool out_open = true, err_open = true;
    uint64_t interval = sp->interval_ms ? sp->interval_ms : 100;
    uint64_t next_sample = interval;
    while (out_open || err_open) {
        uint64_t now = mono_ms() - c->t0;
        if (sp->timeout_ms && now > sp->timeout_ms && !c->killed) {
            snprintf(r->reason, sizeof r->reason, "timed out after %u s", sp->timeout_ms / 1000);
            kill_child(c);
        }
        struct pollfd pf[2] = {{out_open ? out_fd : -1, POLLIN, 0}, {err_open ? err_fd : -1, POLLIN, 0}};
        int pr = poll(pf, 2, poll_wait(c, next_sample, now));
        if (pr < 0 && errno != EINTR) break;
        if (out_open && (pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            out_open = drain(c, out_fd, take_stdout);
        if (err_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            err_open = drain(c, err_fd, take_stderr);
        if (c->killed || r->refused) continue;
        if (sp->exec_path && c->ready && !r->rechecked && recheck_exec(c) && r->refused) continue;
        sample_due(c, &next_sample, interval);
    }
}

static void reap(struct ctx *c) {
    struct bench_run *r = c->r;
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(c->pid, &status, 0, &ru) < 0 && errno == EINTR) {}
    r->exit_status = status;
    r->wall_s = (double)(mono_ms() - c->t0) / 1000.0;
    r->maxrss_kib = (uint64_t)ru.ru_maxrss;
    r->minflt = (uint64_t)ru.ru_minflt;
    r->majflt = (uint64_t)ru.ru_majflt;
    if (!c->sp->no_samples && r->maxrss_kib > r->peak_rss_kib) r->peak_rss_kib = r->maxrss_kib;
    snprintf(r->stderr_tail, sizeof r->stderr_tail, "%s", c->err_tail);
}

static int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

/* Did the run produce a row?  0, or 1 with the reason. */
static int verdict(struct ctx *c) {
    struct bench_run *r = c->r;
    int status = r->exit_status;
    if (r->refused) {
        append_ldso_message(c);
        return 1;
    }
    if (!c->checked && WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        snprintf(r->reason, sizeof r->reason, "failed: could not start %s: %.300s", c->sp->argv[0],
                 c->err_tail);
        return 1;
    }
    if (!c->checked) {
        r->refused = true;
        snprintf(r->reason, sizeof r->reason,
                 "refused: the workload never said \"ready\", so the configuration could not be "
                 "checked (exit status %d)",
                 exit_code(status));
        append_ldso_message(c);
        return 1;
    }
    if (c->killed) /* the timeout */
        return 1;
    if (c->sp->exec_path && !r->rechecked) {
        r->refused = true;
        snprintf(r->reason, sizeof r->reason,
                 "refused: %s ended before ebb-bench could check its configuration", c->sp->exec_path);
        return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(r->reason, sizeof r->reason, "failed: exit %s %d; stderr: %.300s",
                 WIFEXITED(status) ? "status" : "by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), c->err_tail);
        return 1;
    }
    r->ok = true;
    return 0;
}

int bench_run(const struct bench_spec *sp, const struct bench_config *cfg, struct bench_run *r) {
    memset(r, 0, sizeof *r);
    r->t_load_ms = r->t_drop_ms = r->t_end_ms = -1;
    r->rss_load_kib = r->rss_after_kib = r->rss_end_kib = -1;
    signal(SIGPIPE, SIG_IGN);
    struct ctx c = {.sp = sp, .cfg = cfg, .r = r, .in_fd = -1, .drop_deadline = -1, .idle_rss_kib = -1};
    int out_fd, err_fd;
    if (start_child(&c, &out_fd, &err_fd) != 0) return 1;
    watch(&c, out_fd, err_fd);
    close(out_fd);
    close(err_fd);
    close(c.in_fd);
    reap(&c);
    free(c.buf);
    return verdict(&c);
}

void bench_run_free(struct bench_run *r) {
    free(r->s);
    r->s = NULL;
    r->n = r->cap = 0;
}
