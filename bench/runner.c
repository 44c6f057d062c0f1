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

static uint64_t mono_ms(void)
{
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
    char *buf; /* /proc reads */
    size_t cap, len;
    char line[8192];
    size_t line_len;
    char err_tail[1024];
    size_t err_len;
};

static const char *phase_name(enum bench_phase p)
{
    switch (p) {
    case PH_START:
        return "start";
    case PH_LOAD:
        return "load";
    case PH_IDLE:
        return "idle";
    case PH_END:
        return "end";
    }
    return "?";
}

static void push_sample(struct bench_run *r, const struct bench_sample *s)
{
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 1024;
        struct bench_sample *ns = realloc(r->s, nc * sizeof *ns);
        if (!ns)
            return;
        r->s = ns;
        r->cap = nc;
    }
    r->s[r->n++] = *s;
}

/* Reads status and maps once; returns false when the process is gone. */
static bool take_sample(struct ctx *c, struct bench_sample *out)
{
    char path[64];
    memset(out, 0, sizeof *out);
    out->t_ms = (uint32_t)(mono_ms() - c->t0);
    out->phase = (uint8_t)c->phase;
    out->live = c->live;
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->pid);
    if (proc_read_file(path, &c->buf, &c->cap, &c->len) != 0)
        return false;
    long long rss = proc_field_kib(c->buf, "VmRSS");
    long long anon = proc_field_kib(c->buf, "RssAnon");
    if (rss < 0)
        return false; /* a zombie has no VmRSS */
    out->rss_kib = (uint32_t)rss;
    out->anon_kib = anon < 0 ? 0 : (uint32_t)anon;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->pid);
    if (proc_read_file(path, &c->buf, &c->cap, &c->len) == 0) {
        int h = proc_count_arena_heaps(c->buf);
        out->heaps = h < 0 ? 0 : (uint16_t)h;
    }
    return true;
}

static void record(struct ctx *c, const struct bench_sample *s)
{
    struct bench_run *r = c->r;
    if (!c->sp->no_samples)
        push_sample(r, s);
    if (s->rss_kib > r->peak_rss_kib)
        r->peak_rss_kib = s->rss_kib;
    if (s->heaps > r->heaps_max)
        r->heaps_max = s->heaps;
    r->heaps_end = s->heaps;
    if (c->sp->progress) {
        struct bench_status st = {s->t_ms / 1000.0, s->rss_kib, c->live, s->heaps,
                                  phase_name(c->phase)};
        c->sp->progress(c->sp->progress_arg, &st);
    }
}

static void sample_now(struct ctx *c)
{
    struct bench_sample s;
    if (take_sample(c, &s))
        record(c, &s);
}

static void kill_child(struct ctx *c)
{
    if (!c->killed) {
        kill(c->pid, SIGKILL);
        c->killed = true;
    }
}

/* The workload is ready: is the configuration in force? */
static void check_now(struct ctx *c)
{
    char path[64];
    char *environ_buf = NULL;
    size_t ecap = 0, elen = 0;
    c->checked = true;
    snprintf(path, sizeof path, "/proc/%d/environ", (int)c->pid);
    bool have_env = proc_read_file(path, &environ_buf, &ecap, &elen) == 0;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->pid);
    bool have_maps = proc_read_file(path, &c->buf, &c->cap, &c->len) == 0;
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

static void handle_line(struct ctx *c, char *line)
{
    struct bench_run *r = c->r;
    uint64_t now = mono_ms() - c->t0;
    char *save = NULL;
    char *cmd = strtok_r(line, " ", &save);
    if (!cmd)
        return;
    if (strcmp(cmd, "ready") == 0) {
        c->ready = true;
        check_now(c);
        if (!r->refused) {
            sample_now(c);
            if (c->sp->sync && c->in_fd >= 0) {
                ssize_t w = write(c->in_fd, "g", 1);
                (void)w;
            }
        }
    } else if (strcmp(cmd, "malloc-from") == 0) {
        char *rest = save ? save : "";
        snprintf(r->malloc_from, sizeof r->malloc_from, "%s", rest);
    } else if (strcmp(cmd, "live") == 0) {
        strtok_r(NULL, " ", &save); /* the workload's own clock */
        char *v = strtok_r(NULL, " ", &save);
        if (v) {
            long long b = strtoll(v, NULL, 10);
            c->live = b < 0 ? 0 : (uint64_t)b;
            r->has_live = true;
            if (c->live > r->peak_live)
                r->peak_live = c->live;
        }
    } else if (strcmp(cmd, "live-peak") == 0) {
        char *v = strtok_r(NULL, " ", &save);
        if (v) {
            long long b = strtoll(v, NULL, 10);
            r->has_live = true;
            if (b > 0 && (uint64_t)b > r->peak_live)
                r->peak_live = (uint64_t)b;
        }
    } else if (strcmp(cmd, "phase") == 0) {
        char *name = strtok_r(NULL, " ", &save);
        if (!name)
            return;
        if (strcmp(name, "load-start") == 0) {
            c->phase = PH_LOAD;
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
            }
        }
    } else if (strcmp(cmd, "result") == 0 && r->n_res < BENCH_MAX_RESULTS) {
        char *name = strtok_r(NULL, " ", &save);
        char *ops = strtok_r(NULL, " ", &save);
        char *ns = strtok_r(NULL, " ", &save);
        if (name && ops && ns) {
            struct bench_result *res = &r->res[r->n_res++];
            snprintf(res->name, sizeof res->name, "%s", name);
            res->ops = strtoull(ops, NULL, 10);
            res->ns = strtoull(ns, NULL, 10);
        }
    }
}

static bool drain_stdout(struct ctx *c, int fd)
{
    char tmp[4096];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK; /* open, nothing more now */
        }
        if (n == 0)
            return false;
        for (ssize_t i = 0; i < n; i++) {
            char ch = tmp[i];
            if (ch == '\n') {
                c->line[c->line_len] = '\0';
                handle_line(c, c->line);
                c->line_len = 0;
            } else if (c->line_len < sizeof c->line - 1) {
                c->line[c->line_len++] = ch;
            }
        }
    }
}

static bool drain_stderr(struct ctx *c, int fd)
{
    char tmp[4096];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        if (n == 0)
            return false;
        /* Keep the last bytes for messages. */
        size_t keep = sizeof c->err_tail - 1;
        for (ssize_t i = 0; i < n; i++) {
            if (c->err_len == keep) {
                memmove(c->err_tail, c->err_tail + keep / 2, keep - keep / 2);
                c->err_len = keep - keep / 2;
            }
            c->err_tail[c->err_len++] = tmp[i];
        }
        c->err_tail[c->err_len] = '\0';
    }
}

/* The first stderr line that mentions LD_PRELOAD (ld.so's complaint), if any. */
static void append_ldso_message(struct ctx *c)
{
    const char *p = strstr(c->err_tail, "LD_PRELOAD");
    if (!p)
        return;
    const char *s = p;
    while (s > c->err_tail && s[-1] != '\n')
        s--;
    const char *e = strchr(p, '\n');
    int n = e ? (int)(e - s) : (int)strlen(s);
    size_t l = strlen(c->r->reason);
    snprintf(c->r->reason + l, sizeof c->r->reason - l, " [child said: %.*s]", n, s);
}

int bench_run(const struct bench_spec *sp, const struct bench_config *cfg, struct bench_run *r)
{
    memset(r, 0, sizeof *r);
    r->t_drop_ms = r->t_end_ms = -1;
    r->rss_after_kib = r->rss_end_kib = -1;
    signal(SIGPIPE, SIG_IGN);

    char **env = bench_child_env(sp->environ, cfg);
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
    struct ctx c = {.sp = sp, .cfg = cfg, .r = r, .in_fd = in[1], .drop_deadline = -1};
    c.t0 = mono_ms();
    c.pid = fork();
    if (c.pid < 0) {
        snprintf(r->reason, sizeof r->reason, "fork: %s", strerror(errno));
        bench_free_env(env);
        return 1;
    }
    if (c.pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execvpe(sp->argv[0], sp->argv, env);
        dprintf(2, "cannot run %s: %s\n", sp->argv[0], strerror(errno));
        _exit(127);
    }
    bench_free_env(env);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);

    bool out_open = true, err_open = true;
    uint64_t interval = sp->interval_ms ? sp->interval_ms : 100;
    uint64_t next_sample = interval;
    while (out_open || err_open) {
        uint64_t now = mono_ms() - c.t0;
        if (sp->timeout_ms && now > sp->timeout_ms && !c.killed) {
            snprintf(r->reason, sizeof r->reason, "timed out after %u s", sp->timeout_ms / 1000);
            kill_child(&c);
        }
        int64_t wait = (int64_t)next_sample - (int64_t)now;
        if (c.drop_deadline >= 0 && r->rss_after_kib < 0) {
            int64_t w2 = c.drop_deadline - (int64_t)now;
            if (w2 < wait)
                wait = w2;
        }
        if (wait < 0)
            wait = 0;
        struct pollfd pf[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
        int pr = poll(pf, 2, (int)wait);
        if (pr < 0 && errno != EINTR)
            break;
        if (out_open && (pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            out_open = drain_stdout(&c, out[0]);
        if (err_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            err_open = drain_stderr(&c, err[0]);
        if (c.killed || r->refused)
            continue;
        now = mono_ms() - c.t0;
        if (c.drop_deadline >= 0 && r->rss_after_kib < 0 && (int64_t)now >= c.drop_deadline) {
            struct bench_sample s;
            if (take_sample(&c, &s)) {
                record(&c, &s);
                r->rss_after_kib = s.rss_kib;
            }
        }
        if (now >= next_sample) {
            if (c.ready && !sp->no_samples && c.phase != PH_END) /* not the exit teardown */
                sample_now(&c);
            while (next_sample <= now)
                next_sample += interval;
        }
    }
    close(out[0]);
    close(err[0]);
    close(in[1]);

    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(c.pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    r->exit_status = status;
    r->wall_s = (double)(mono_ms() - c.t0) / 1000.0;
    r->maxrss_kib = (uint64_t)ru.ru_maxrss;
    if (!sp->no_samples && r->maxrss_kib > r->peak_rss_kib)
        r->peak_rss_kib = r->maxrss_kib;
    snprintf(r->stderr_tail, sizeof r->stderr_tail, "%s", c.err_tail);
    free(c.buf);

    if (r->refused) {
        append_ldso_message(&c);
        return 1;
    }
    if (!c.checked && WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        snprintf(r->reason, sizeof r->reason, "failed: could not start %s: %.300s", sp->argv[0],
                 c.err_tail);
        return 1;
    }
    if (!c.checked) {
        r->refused = true;
        snprintf(r->reason, sizeof r->reason,
                 "refused: the workload never said \"ready\", so the configuration could not be "
                 "checked (exit status %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        append_ldso_message(&c);
        return 1;
    }
    if (c.killed) /* the timeout */
        return 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(r->reason, sizeof r->reason, "failed: exit %s %d; stderr: %.300s",
                 WIFEXITED(status) ? "status" : "by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), c.err_tail);
        return 1;
    }
    r->ok = true;
    return 0;
}

void bench_run_free(struct bench_run *r)
{
    free(r->s);
    r->s = NULL;
    r->n = r->cap = 0;
}
