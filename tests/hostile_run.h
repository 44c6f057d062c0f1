/* For the hostile-environment tests: run a program to its end with a deadline, its
 * stdout and stderr captured, and count lines of its output. */
#ifndef EBB_HOSTILE_RUN_H
#define EBB_HOSTILE_RUN_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct run_result {
    int status;     /* from waitpid; -1 if it could not be started */
    bool timed_out; /* killed at the deadline */
    char out[1 << 16], err[1 << 16];
    size_t out_len, err_len;
};

static inline double run_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs path with argv and exactly the environment envp (NULL: this process's), waits
 * at most timeout_s (then SIGKILL).  Output beyond the buffers is dropped. */
static inline void run_program(const char *path, char *const argv[], char *const envp[], double timeout_s,
                               struct run_result *r) {
    memset(r, 0, sizeof *r);
    r->status = -1;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) return;
    pid_t pid = fork();
    if (pid < 0) return;
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        if (envp) execve(path, argv, envp);
        else execv(path, argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    double deadline = run_now() + timeout_s;
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds) {
        double left = deadline - run_now();
        if (left <= 0) {
            r->timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        int n = poll(fds, 2, (int)(left * 1000) + 1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char *buf = i ? r->err : r->out;
            size_t *len = i ? &r->err_len : &r->out_len;
            char tmp[4096];
            ssize_t got = read(fds[i].fd, tmp, sizeof tmp);
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = sizeof r->out - 1 - *len;
            size_t take = (size_t)got < room ? (size_t)got : room;
            memcpy(buf + *len, tmp, take);
            *len += take;
            buf[*len] = 0;
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0) close(fds[i].fd);
    while (waitpid(pid, &r->status, 0) < 0 && errno == EINTR) {}
}

/* Lines of text that contain needle. */
static inline int count_lines(const char *text, const char *needle) {
    int n = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        if (copy && strstr(copy, needle)) n++;
        free(copy);
        line += len + (end ? 1 : 0);
    }
    return n;
}

/* This process's environment plus extra "NAME=VALUE" entries (which come last, and win
 * over variables of the same name, which are left out); malloc'd, NULL-terminated. */
static inline char **env_with(char *const extra[]) {
    extern char **environ;
    size_t n = 0, k = 0;
    while (environ[n]) n++;
    while (extra[k]) k++;
    char **env = calloc(n + k + 1, sizeof *env);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < k && !replaced; j++) {
            size_t l = strcspn(extra[j], "=");
            replaced = !strncmp(environ[i], extra[j], l) && environ[i][l] == '=';
        }
        if (!replaced) env[o++] = environ[i];
    }
    for (size_t j = 0; j < k; j++) env[o++] = extra[j];
    env[o] = NULL;
    return env;
}
#endif
