#define _GNU_SOURCE
#include "testutil.h"

#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

double test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *copy_for_nobody(const char *path) {
    char dir[] = "/tmp/ebb-tools-test-XXXXXX";
    if (!mkdtemp(dir) || chmod(dir, 0755) < 0) return NULL;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char *dst;
    if (asprintf(&dst, "%s/%s", dir, base) < 0) return NULL;
    int in = open(path, O_RDONLY | O_CLOEXEC);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    char buf[65536];
    ssize_t n = 0;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    if (in < 0 || out < 0 || n < 0 || chmod(dst, 0755) < 0) {
        free(dst);
        return NULL;
    }
    return dst;
}

const char *test_env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *test_need(const char *name) {
    const char *v = test_env(name);
    if (!v) fail_msg("%s is not set: run the tests through meson", name);
    return v;
}

/* Children started and not yet stopped, so that a failed test leaves none behind. */
static pid_t live[64];

static void track(pid_t pid, bool add) {
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (add ? live[i] == 0 : live[i] == pid) {
            live[i] = add ? pid : 0;
            return;
        }
}

int children_teardown(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (live[i] > 0) {
            /* only a child of ours still running (a reaped pid may belong to anyone now) */
            if (waitpid(live[i], NULL, WNOHANG) == 0) {
                kill(live[i], SIGKILL);
                waitpid(live[i], NULL, 0);
            }
            live[i] = 0;
        }
    return 0;
}

static void in_child(char *const argv[], char *const extra_env[], bool as_nobody) {
    for (size_t i = 0; extra_env && extra_env[i]; i++) putenv(extra_env[i]);
    if (as_nobody && (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)) {
        perror("drop to nobody");
        _exit(126);
    }
    /* die with the test (set after the credential change, which clears it) */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv(argv[0], argv);
    perror(argv[0]);
    _exit(127);
}

static int start(struct child *c, char *const argv[], char *const extra_env[], bool as_nobody, bool piped) {
    int p[2], in[2] = {-1, -1};
    memset(c, 0, sizeof(*c));
    c->in = -1;
    if (pipe2(p, O_CLOEXEC) < 0 || (piped && pipe2(in, O_CLOEXEC) < 0)) return -1;
    c->pid = fork();
    if (c->pid < 0) return -1;
    if (c->pid == 0) {
        dup2(p[1], 1);
        if (piped) {
            dup2(p[1], 2);
            dup2(in[0], 0);
        }
        in_child(argv, extra_env, as_nobody);
    }
    close(p[1]);
    c->out = p[0];
    if (piped) {
        close(in[0]);
        c->in = in[1];
    }
    track(c->pid, true);
    return 0;
}

int child_start(struct child *c, char *const argv[], char *const extra_env[], bool as_nobody) {
    return start(c, argv, extra_env, as_nobody, false);
}

int child_start_piped(struct child *c, char *const argv[], char *const extra_env[]) {
    return start(c, argv, extra_env, false, true);
}

/* More output into c->buf until `end`: 1 read, 0 time is up, -1 end of file or full. */
static int read_more(struct child *c, double end) {
    double left = end - test_now();
    if (left <= 0) return 0;
    if (c->len + 1 >= sizeof(c->buf)) return -1;
    struct pollfd pf = {c->out, POLLIN, 0};
    if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) return 1; /* look at the clock again */
    ssize_t r = read(c->out, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (r <= 0) return -1;
    c->len += (size_t)r;
    return 1;
}

bool child_wait_line(struct child *c, const char *word, double timeout_s) {
    double end = test_now() + timeout_s;
    size_t wl = strlen(word);
    for (;;) {
        c->buf[c->len] = '\0';
        for (char *l = c->buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
            if (!strncmp(l, word, wl) && strchr(l, '\n')) return true;
        if (read_more(c, end) <= 0) return false;
    }
}

bool child_next_line(struct child *c, char *line, size_t n, double timeout_s) {
    double end = test_now() + timeout_s;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t l = (size_t)(nl - c->buf), k = l < n - 1 ? l : n - 1;
            memcpy(line, c->buf, k);
            line[k] = '\0';
            c->len -= l + 1;
            memmove(c->buf, nl + 1, c->len);
            return true;
        }
        if (read_more(c, end) <= 0) return false;
    }
}

/* Waits for the child until `end`, then kills it; closes its pipes and forgets it.
 * Returns its wait status; *in_time: it ended by itself before `end`. */
static int finish(struct child *c, double end, bool *in_time) {
    int st = -1;
    pid_t r;
    while ((r = waitpid(c->pid, &st, WNOHANG)) == 0 && test_now() < end) usleep(2000);
    *in_time = r == c->pid;
    if (!*in_time) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &st, 0);
    }
    if (c->in >= 0) close(c->in);
    close(c->out);
    track(c->pid, false);
    c->pid = 0;
    return st;
}

int child_wait_exit(struct child *c, double timeout_s) {
    double end = test_now() + timeout_s;
    while (read_more(c, end) > 0)
        ;
    c->buf[c->len] = '\0';
    bool in_time;
    int st = finish(c, end, &in_time);
    return in_time ? st : -1;
}

int child_stop(struct child *c) {
    if (c->pid <= 0) return -1;
    kill(c->pid, SIGTERM);
    bool in_time;
    return finish(c, test_now() + 10, &in_time);
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

int run_capture(char *const argv[], char *const extra_env[], bool as_nobody, double timeout_s, char **out,
                char **err) {
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        in_child(argv, extra_env, as_nobody);
    }
    close(po[1]);
    close(pe[1]);
    size_t cap[2] = {4096, 4096}, len[2] = {0, 0};
    char *buf[2] = {malloc(cap[0]), malloc(cap[1])};
    struct pollfd pf[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    double end = test_now() + timeout_s;
    while (open_fds > 0) {
        double left = end - test_now();
        if (left <= 0) {
            kill(pid, SIGKILL);
            break;
        }
        if (poll(pf, 2, (int)(left * 1000) + 1) <= 0) continue;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents) continue;
            if (len[i] + 4096 > cap[i]) {
                cap[i] *= 2;
                buf[i] = realloc(buf[i], cap[i]);
            }
            ssize_t r = read(pf[i].fd, buf[i] + len[i], cap[i] - len[i] - 1);
            if (r <= 0) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
            } else {
                len[i] += (size_t)r;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (pf[i].fd >= 0) close(pf[i].fd);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    buf[0][len[0]] = '\0';
    buf[1][len[1]] = '\0';
    if (out) *out = buf[0];
    else free(buf[0]);
    if (err) *err = buf[1];
    else free(buf[1]);
    return st;
}

/* ---- JSON ---- */

struct jp {
    const char *s;
    bool bad;
};

static void ws(struct jp *p) {
    while (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t') p->s++;
}

static char *jstring(struct jp *p) {
    if (*p->s != '"') {
        p->bad = true;
        return NULL;
    }
    p->s++;
    size_t cap = 32, n = 0;
    char *o = malloc(cap);
    while (*p->s && *p->s != '"') {
        char ch = *p->s++;
        if ((unsigned char)ch < 0x20) {
            p->bad = true;
            break;
        }
        if (ch == '\\') {
            char e = *p->s++;
            switch (e) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case '"':
            case '\\':
            case '/': ch = e; break;
            case 'u': {
                unsigned v;
                if (sscanf(p->s, "%4x", &v) != 1) {
                    p->bad = true;
                    return o;
                }
                p->s += 4;
                ch = v < 0x80 ? (char)v : '?';
                break;
            }
            default: p->bad = true; return o;
            }
        }
        if (n + 2 > cap) o = realloc(o, cap *= 2);
        o[n++] = ch;
    }
    o[n] = '\0';
    if (*p->s != '"') p->bad = true;
    else p->s++;
    return o;
}

static void jvalue(struct jp *p, struct jval *v) {
    memset(v, 0, sizeof(*v));
    ws(p);
    if (*p->s == '{' || *p->s == '[') {
        bool obj = *p->s == '{';
        char close_ch = obj ? '}' : ']';
        v->t = obj ? J_OBJ : J_ARR;
        p->s++;
        ws(p);
        if (*p->s == close_ch) {
            p->s++;
            return;
        }
        for (;;) {
            v->items = realloc(v->items, (v->n + 1) * sizeof(*v->items));
            if (obj) {
                v->keys = realloc(v->keys, (v->n + 1) * sizeof(*v->keys));
                ws(p);
                v->keys[v->n] = jstring(p);
                ws(p);
                if (*p->s != ':') p->bad = true;
                else p->s++;
            }
            jvalue(p, &v->items[v->n]);
            v->n++;
            if (p->bad) return;
            ws(p);
            if (*p->s == ',') {
                p->s++;
                continue;
            }
            if (*p->s == close_ch) {
                p->s++;
                return;
            }
            p->bad = true;
            return;
        }
    }
    if (*p->s == '"') {
        v->t = J_STR;
        v->str = jstring(p);
        return;
    }
    if (!strncmp(p->s, "true", 4) || !strncmp(p->s, "false", 5)) {
        v->t = J_BOOL;
        v->b = p->s[0] == 't';
        p->s += v->b ? 4 : 5;
        return;
    }
    if (!strncmp(p->s, "null", 4)) {
        v->t = J_NULL;
        p->s += 4;
        return;
    }
    char *end;
    v->t = J_NUM;
    v->num = strtod(p->s, &end);
    if (end == p->s || *p->s == '+' || *p->s == '.') p->bad = true;
    p->s = end;
}

static void jfree_inner(struct jval *v) {
    for (size_t i = 0; i < v->n; i++) {
        jfree_inner(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
}

struct jval *json_parse(const char *text) {
    struct jp p = {text, false};
    struct jval *v = calloc(1, sizeof(*v));
    jvalue(&p, v);
    ws(&p);
    if (p.bad || *p.s) {
        json_free(v);
        return NULL;
    }
    return v;
}

void json_free(struct jval *v) {
    if (!v) return;
    jfree_inner(v);
    free(v);
}

const struct jval *json_at(const struct jval *v, const char *path) {
    char part[128];
    while (v && *path) {
        size_t n = strcspn(path, ".");
        snprintf(part, sizeof(part), "%.*s", (int)n, path);
        path += n + (path[n] == '.');
        const struct jval *next = NULL;
        if (v->t == J_OBJ) {
            for (size_t i = 0; i < v->n && !next; i++)
                if (!strcmp(v->keys[i], part)) next = &v->items[i];
        } else if (v->t == J_ARR) {
            char *e;
            long idx = strtol(part, &e, 10);
            if (!*e && idx >= 0 && (size_t)idx < v->n) next = &v->items[idx];
        }
        v = next;
    }
    return v;
}

double json_num(const struct jval *v, const char *path) {
    const struct jval *x = json_at(v, path);
    return x && x->t == J_NUM ? x->num : -1;
}

const char *json_str(const struct jval *v, const char *path) {
    const struct jval *x = json_at(v, path);
    return x && x->t == J_STR ? x->str : NULL;
}

/* ---- /proc ---- */

uint64_t smaps_rss_in(pid_t pid, uint64_t lo, uint64_t hi) {
    char path[64], *text = NULL;
    size_t cap = 0;
    snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
    struct procfs_vmas m = {0};
    uint64_t sum = 0;
    if (procfs_read(path, &text, &cap, NULL) == 0 && procfs_vmas_parse(&m, text, true) == 0)
        for (size_t i = 0; i < m.n; i++)
            if (m.v[i].start >= lo && m.v[i].end <= hi) sum += m.v[i].rss;
    procfs_vmas_free(&m);
    free(text);
    return sum;
}

bool maps_has(pid_t pid, const char *name) {
    char path[64], *text = NULL;
    size_t cap = 0;
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    const char *const names[] = {name, NULL};
    bool found = procfs_read(path, &text, &cap, NULL) == 0 && procfs_maps_find_lib(text, names, NULL, 0);
    free(text);
    return found;
}
