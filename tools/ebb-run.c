/* ebb-run: run a command with ebbmalloc preloaded.
 *
 *   ebb-run [options] -- COMMAND ARGS...
 *
 * The library is, in this order: --lib PATH, $EBB_LIB, libebbmalloc.so next to this
 * program (../alloc/ in the build tree, or the same directory), the install libdir.
 * Before starting anything, the command (or a script's interpreter) is checked for what
 * makes the dynamic loader ignore LD_PRELOAD: static linking, set-user-ID or file
 * capabilities, another ELF class or machine.  Then ebb-run stays the parent: it starts
 * the command and watches /proc/CHILD/maps until the library is mapped.  If the program
 * loaded its other libraries without ours, the preload did not take effect and the
 * command is stopped (or, with --allow-no-preload, left running with a warning).
 * SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 sent to ebb-run go to the command; the
 * command's exit status (or the signal that ended it) becomes ebb-run's.
 *
 * Exit status: the command's; 125 when ebb-run refuses (bad usage, library missing,
 * preload impossible or not effective); 126 command not executable; 127 not found. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "ebbmalloc.h"
#include "procfs.h"

#ifndef EBB_INSTALL_LIBDIR
#define EBB_INSTALL_LIBDIR "/usr/local/lib"
#endif
#define LIBNAME "libebbmalloc.so"
#define REFUSE 125

static bool verbose;
static volatile pid_t child_pid;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ebb-run: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: ebb-run [options] -- COMMAND [ARGS...]\n"
            "Runs COMMAND with ebbmalloc preloaded (LD_PRELOAD) and checks that it took effect.\n"
            "  --stats             print ebbmalloc's statistics at exit (EBB_STATS=1)\n"
            "  --release-ms MS     return free memory to the kernel after MS ms (EBB_RELEASE_MS)\n"
            "  --soft-limit SIZE   soft limit on resident memory: 512M, 2G (EBB_SOFT_LIMIT, in bytes)\n"
            "                      or 90%% of the cgroup's limit\n"
            "  --no-stats-page     do not publish the stats page (EBB_STATS_SHM=0)\n"
            "  --lib PATH          use this libebbmalloc.so\n"
            "  --allow-no-preload  if the preload did not take effect, warn and keep the command running\n"
            "  --no-check          exec the command directly (no check that the preload took effect)\n"
            "  -v, --verbose       say which library is used and what was checked\n"
            "Library search: --lib, $EBB_LIB, next to ebb-run (build tree), %s.\n"
            "Exit status: the command's; 125 refused, 126 not executable, 127 not found.\n",
            EBB_INSTALL_LIBDIR "/" LIBNAME);
}

/* ---- the library ---- */

static bool usable_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && access(path, R_OK) == 0;
}

static bool find_library(const char *opt, char *out) {
    const char *env = getenv("EBB_LIB");
    const char *explicit_ = opt ? opt : (env && *env ? env : NULL);
    if (explicit_) {
        if (!usable_file(explicit_) || !realpath(explicit_, out)) {
            say("the library %s (from %s) does not exist or is not readable", explicit_,
                opt ? "--lib" : "EBB_LIB");
            return false;
        }
        return true;
    }
    char self[PATH_MAX], cand[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            const char *rel[] = {"/../alloc/" LIBNAME, "/" LIBNAME, "/../lib/" LIBNAME};
            for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
                snprintf(cand, sizeof(cand), "%s%s", self, rel[i]);
                if (usable_file(cand) && realpath(cand, out)) return true;
            }
        }
    }
    if (usable_file(EBB_INSTALL_LIBDIR "/" LIBNAME) && realpath(EBB_INSTALL_LIBDIR "/" LIBNAME, out))
        return true;
    say("cannot find %s: looked next to ebb-run (%s/../alloc, %s) and in %s; build it (ninja -C build) "
        "or give --lib PATH or EBB_LIB",
        LIBNAME, n > 0 ? self : "?", n > 0 ? self : "?", EBB_INSTALL_LIBDIR);
    return false;
}

/* ---- what the loader will do with the command ---- */

struct elf_id {
    unsigned char cls;
    uint16_t machine;
    bool dynamic; /* has PT_INTERP */
};

/* 1: ELF read into *id; 0: not ELF; -1: unreadable */
static int read_elf(const char *path, struct elf_id *id, char *shebang, size_t sblen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    unsigned char buf[256];
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    if (n >= 2 && buf[0] == '#' && buf[1] == '!' && shebang) {
        size_t k = 0, i = 2;
        while (i < (size_t)n && (buf[i] == ' ' || buf[i] == '\t')) i++;
        while (i < (size_t)n && buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\n' && k + 1 < sblen)
            shebang[k++] = (char)buf[i++];
        shebang[k] = '\0';
        close(fd);
        return 0;
    }
    if (n < (ssize_t)sizeof(Elf64_Ehdr) || memcmp(buf, ELFMAG, SELFMAG)) {
        close(fd);
        return 0;
    }
    id->cls = buf[EI_CLASS];
    id->dynamic = false;
    if (id->cls == ELFCLASS64) {
        Elf64_Ehdr eh;
        memcpy(&eh, buf, sizeof(eh));
        id->machine = eh.e_machine;
        for (unsigned i = 0; i < eh.e_phnum; i++) {
            Elf64_Phdr ph;
            if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * eh.e_phentsize)) != sizeof(ph))
                break;
            if (ph.p_type == PT_INTERP) id->dynamic = true;
        }
    } else if (id->cls == ELFCLASS32) {
        Elf32_Ehdr eh;
        memcpy(&eh, buf, sizeof(eh));
        id->machine = eh.e_machine;
        for (unsigned i = 0; i < eh.e_phnum; i++) {
            Elf32_Phdr ph;
            if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * eh.e_phentsize)) != sizeof(ph))
                break;
            if (ph.p_type == PT_INTERP) id->dynamic = true;
        }
    }
    close(fd);
    return 1;
}

/* Resolve a command name as execvp does; false if not found. */
static bool resolve(const char *cmd, char *out) {
    if (strchr(cmd, '/')) {
        snprintf(out, PATH_MAX, "%s", cmd);
        return access(out, F_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path;; p++) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        snprintf(out, PATH_MAX, "%.*s%s%s", (int)len, p, len ? "/" : "", cmd);
        struct stat sb;
        if (stat(out, &sb) == 0 && S_ISREG(sb.st_mode) && access(out, X_OK) == 0) return true;
        if (!e) return false;
        p = e;
    }
}

/* Why LD_PRELOAD would not take effect for this file, or NULL. */
static const char *preload_blocker(const char *path, const struct elf_id *lib, int depth, char *detail,
                                   size_t dlen) {
    struct stat sb;
    if (stat(path, &sb) < 0) return NULL; /* exec will report it */
    if (((sb.st_mode & S_ISUID) && sb.st_uid != getuid()) ||
        ((sb.st_mode & S_ISGID) && sb.st_gid != getgid()) || getuid() != geteuid()) {
        snprintf(detail, dlen, "%s", path);
        return "runs set-user-ID or set-group-ID: the loader ignores LD_PRELOAD of this library in secure "
               "mode";
    }
    if (getxattr(path, "security.capability", NULL, 0) > 0) {
        snprintf(detail, dlen, "%s", path);
        return "has file capabilities: the loader ignores LD_PRELOAD of this library in secure mode";
    }
    struct elf_id id;
    char interp[PATH_MAX];
    int r = read_elf(path, &id, interp, sizeof(interp));
    if (r == 0 && interp[0] && depth < 4) {
        char res[PATH_MAX];
        if (!resolve(interp, res)) return NULL;
        return preload_blocker(res, lib, depth + 1, detail, dlen);
    }
    if (r != 1) return NULL;
    snprintf(detail, dlen, "%s", path);
    if (!id.dynamic) return "is statically linked: there is no dynamic loader to preload the library";
    if (id.cls != lib->cls || id.machine != lib->machine)
        return "is built for another architecture or word size than the library";
    return NULL;
}

/* ---- options ---- */

struct run_opts {
    const char *lib_opt; /* --lib */
    bool allow;          /* --allow-no-preload */
    bool check;          /* false: --no-check */
    char **cmd;          /* the command and its arguments */
};

static int set_env(const char *name, const char *value) {
    if (setenv(name, value, 1) < 0) {
        say("cannot set %s: %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

/* --soft-limit: a size (K/M/G/T suffixes) passed on in bytes, or a share of the cgroup
 * limit ("90%"), into out; false when it is neither. */
static bool soft_limit_value(const char *arg, char *out, size_t n) {
    char *end;
    unsigned long long v = strtoull(arg, &end, 10);
    unsigned long long mul = 1;
    bool pct = end != arg && !strcmp(end, "%");
    if (end != arg && *end && !pct) {
        switch (*end++) {
        case 'k':
        case 'K': mul = 1ull << 10; break;
        case 'm':
        case 'M': mul = 1ull << 20; break;
        case 'g':
        case 'G': mul = 1ull << 30; break;
        case 't':
        case 'T': mul = 1ull << 40; break;
        default: end = (char *)arg; break;
        }
        if (*end == 'b' || *end == 'B') end++;
    }
    if (end == arg || (*end && !pct) || arg[0] == '-' || v == 0 || (pct && v > 100)) return false;
    if (pct) snprintf(out, n, "%llu%%", v);
    else snprintf(out, n, "%llu", v * mul);
    return true;
}

/* The command line into o, the EBB_* options into our environment (the command inherits
 * it).  Returns -1 to go on, or the status to exit with. */
static int parse_options(int argc, char **argv, struct run_opts *o) {
    static const struct option opts[] = {
        {"stats", no_argument, NULL, 's'},
        {"release-ms", required_argument, NULL, 'r'},
        {"soft-limit", required_argument, NULL, 'l'},
        {"no-stats-page", no_argument, NULL, 'P'},
        {"lib", required_argument, NULL, 'L'},
        {"allow-no-preload", no_argument, NULL, 'a'},
        {"no-check", no_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "+vhV", opts, NULL)) != -1) {
        char *end, buf[32];
        switch (c) {
        case 's':
            if (set_env("EBB_STATS", "1") < 0) return REFUSE;
            break;
        case 'r': {
            long ms = strtol(optarg, &end, 10);
            if (*end || end == optarg || ms < 0) {
                say("--release-ms needs a number of milliseconds (0 or more), not '%s'", optarg);
                return REFUSE;
            }
            snprintf(buf, sizeof(buf), "%ld", ms);
            if (set_env("EBB_RELEASE_MS", buf) < 0) return REFUSE;
            break;
        }
        case 'l':
            if (!soft_limit_value(optarg, buf, sizeof(buf))) {
                say("--soft-limit needs a size such as 512M or 2G, or a share of the cgroup limit "
                    "such as 90%%, not '%s'",
                    optarg);
                return REFUSE;
            }
            if (set_env("EBB_SOFT_LIMIT", buf) < 0) return REFUSE;
            break;
        case 'P':
            if (set_env("EBB_STATS_SHM", "0") < 0) return REFUSE;
            break;
        case 'L': o->lib_opt = optarg; break;
        case 'a': o->allow = true; break;
        case 'n': o->check = false; break;
        case 'v': verbose = true; break;
        case 'h': usage(stdout); return 0;
        case 'V':
            printf("ebb-run (ebbmalloc) %d.%d.%d\n", EBB_VERSION_MAJOR, EBB_VERSION_MINOR, EBB_VERSION_PATCH);
            return 0;
        default: usage(stderr); return REFUSE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return REFUSE;
    }
    o->cmd = argv + optind;
    return -1;
}

/* ---- before the command starts ---- */

/* The library to preload (into lib), what it is built for and which file it is.  Returns
 * -1 to go on, or the status to exit with. */
static int prepare_library(const char *lib_opt, char *lib, struct elf_id *id, struct stat *st) {
    if (!find_library(lib_opt, lib)) return REFUSE;
    if (strpbrk(lib, " :\t")) {
        say("the library path %s holds a space or colon, which LD_PRELOAD cannot carry", lib);
        return REFUSE;
    }
    if (read_elf(lib, id, NULL, 0) != 1 || !id->cls) {
        say("%s is not an ELF shared library", lib);
        return REFUSE;
    }
    if (stat(lib, st) < 0) {
        say("cannot stat %s: %s", lib, strerror(errno));
        return REFUSE;
    }
    return -1;
}

/* The program cmd[0] names (into exe), refused when the loader would ignore LD_PRELOAD
 * for it (unless allow).  Returns -1 to go on, or the status to exit with. */
static int prepare_command(char **cmd, const struct elf_id *lib_id, bool allow, char *exe) {
    if (!resolve(cmd[0], exe)) {
        say("%s: command not found", cmd[0]);
        return 127;
    }
    char detail[PATH_MAX];
    const char *why = preload_blocker(exe, lib_id, 0, detail, sizeof(detail));
    if (why) {
        if (!allow) {
            say("refusing to run %s: %s %s. ebbmalloc would not be used (--allow-no-preload runs it anyway)",
                cmd[0], detail, why);
            return REFUSE;
        }
        say("warning: %s %s; running it without ebbmalloc", detail, why);
    }
    return -1;
}

/* LD_PRELOAD: ours first, the user's kept after it. */
static int set_preload(const char *lib) {
    const char *old = getenv("LD_PRELOAD");
    char *pre = NULL;
    if (asprintf(&pre, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "") < 0) return -1;
    int r = set_env("LD_PRELOAD", pre);
    free(pre);
    return r;
}

/* ---- the child ---- */

static void forward(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    /* the terminal already sent this to the whole foreground group, child included */
    if (si && si->si_code == SI_KERNEL && (sig == SIGINT || sig == SIGQUIT || sig == SIGHUP)) return;
    if (child_pid > 0) kill(child_pid, sig);
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

/* Runs exe as our child, the signals we forward blocked until the handlers are in place.
 * A failed exec comes back through a close-on-exec pipe.  Returns -1 to go on (*pid is
 * the child, its image replaced), or the status to exit with. */
static int start_child(const char *exe, char **cmd, pid_t *pid) {
    sigset_t block, old_mask;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &old_mask);

    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        say("pipe: %s", strerror(errno));
        return REFUSE;
    }
    *pid = fork();
    if (*pid < 0) {
        say("fork: %s", strerror(errno));
        return REFUSE;
    }
    if (*pid == 0) {
        close(errpipe[0]);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        execv(exe, cmd);
        int e = errno;
        if (write(errpipe[1], &e, sizeof(e)) < 0) _exit(127);
        _exit(127);
    }
    child_pid = *pid;
    close(errpipe[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = forward;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) sigaction(forwarded[i], &sa, NULL);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);

    int exec_errno = 0;
    ssize_t r;
    do r = read(errpipe[0], &exec_errno, sizeof(exec_errno));
    while (r < 0 && errno == EINTR);
    close(errpipe[0]);
    if (r == (ssize_t)sizeof(exec_errno)) {
        int st;
        while (waitpid(*pid, &st, 0) < 0 && errno == EINTR)
            ;
        say("cannot run %s: %s", cmd[0], strerror(exec_errno));
        return exec_errno == ENOENT ? 127 : 126;
    }
    return -1;
}

/* A shared library other than the loader itself: the loader is past the preloads. */
static bool other_library(const struct procfs_map *e) {
    return e->path_len && memmem(e->path, e->path_len, ".so", 3) &&
           !memmem(e->path, e->path_len, "/ld-linux", 9) && !memmem(e->path, e->path_len, "/ld-", 4);
}

/* Is the library (this device and inode) in the child's maps?  *other_libs: other shared
 * libraries are; *readable: the maps could be read. */
static bool child_maps_lib(pid_t pid, const struct stat *lib, bool *other_libs, bool *readable) {
    static char *buf;
    static size_t cap;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    *other_libs = false;
    *readable = procfs_read(path, &buf, &cap, NULL) == 0;
    if (!*readable) return false;
    bool ours = false;
    struct procfs_map e;
    for (const char *c = buf; procfs_maps_next(&c, &e);) {
        if (e.inode == lib->st_ino && e.dev_major == major(lib->st_dev) && e.dev_minor == minor(lib->st_dev))
            ours = true;
        else *other_libs |= other_library(&e);
    }
    return ours;
}

static bool child_gone(pid_t pid) {
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

enum preload_seen { SEEN_MAPPED, SEEN_GONE, SEEN_UNREADABLE, SEEN_NOT_MAPPED };

/* The image is replaced; the loader maps preloads before the program's own libraries.
 * Polls the child's maps (backing off to 20 ms) until the library shows beside the
 * program's other libraries, the command ends, the maps cannot be read, other libraries
 * have shown for 50 ms without ours, or 10 s have passed (then: was ours there at the
 * last look).  Ours alone is not enough: the loader maps a file it then refuses (a PIE
 * executable given as the library is mapped, judged and unmapped again), so a look in
 * that window would see a preload that is not going to take effect. */
static enum preload_seen watch_preload(pid_t pid, const struct stat *lib_st) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long delay_us = 200;
    for (;;) {
        bool others, readable;
        bool ours = child_maps_lib(pid, lib_st, &others, &readable);
        if (ours && others) return SEEN_MAPPED;
        if (child_gone(pid)) return SEEN_GONE;
        if (!readable) return SEEN_UNREADABLE;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (el > 10) return ours ? SEEN_MAPPED : SEEN_NOT_MAPPED;
        if (others && el > 0.05) return SEEN_NOT_MAPPED;
        struct timespec d = {0, delay_us * 1000};
        nanosleep(&d, NULL);
        if (delay_us < 20000) delay_us *= 2;
    }
}

/* Says what the watch saw; a preload that did not take effect stops the command unless
 * allow.  Returns -1 to go on, or the status to exit with. */
static int judge_preload(enum preload_seen seen, pid_t pid, const char *lib, const char *exe, bool allow) {
    switch (seen) {
    case SEEN_MAPPED:
        if (verbose) say("checked: %s is mapped in process %d", lib, (int)pid);
        return -1;
    case SEEN_GONE:
        if (verbose) say("the command ended before the preload could be checked");
        return -1;
    case SEEN_UNREADABLE:
        say("warning: cannot read /proc/%d/maps to check the preload (the command changed its "
            "credentials?); letting it run",
            (int)pid);
        return -1;
    case SEEN_NOT_MAPPED: break;
    }
    if (allow) {
        say("warning: %s is not mapped in process %d: the preload did not take effect; the command "
            "runs with its own allocator",
            lib, (int)pid);
        return -1;
    }
    say("the preload did not take effect: %s is not mapped in process %d (%s). Stopping it; "
        "--allow-no-preload lets it run without ebbmalloc",
        lib, (int)pid, exe);
    kill(pid, SIGKILL);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return REFUSE;
}

/* Our exit is the command's: its status, or the signal that ended it (without a core). */
static int exit_like(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(sig, SIG_DFL);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, sig);
        sigprocmask(SIG_UNBLOCK, &s, NULL);
        raise(sig);
        return 128 + sig;
    }
    return REFUSE;
}

static int wait_child(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            say("waitpid: %s", strerror(errno));
            return REFUSE;
        }
    return exit_like(status);
}

int main(int argc, char **argv) {
    struct run_opts o = {.check = true};
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0) return rc;
    char lib[PATH_MAX], exe[PATH_MAX];
    struct elf_id lib_id;
    struct stat lib_st;
    if ((rc = prepare_library(o.lib_opt, lib, &lib_id, &lib_st)) >= 0 ||
        (rc = prepare_command(o.cmd, &lib_id, o.allow, exe)) >= 0)
        return rc;
    if (set_preload(lib) < 0) return REFUSE;
    if (verbose) say("preloading %s into %s", lib, exe);

    if (!o.check) {
        execv(exe, o.cmd);
        say("cannot run %s: %s", o.cmd[0], strerror(errno));
        return errno == ENOENT ? 127 : 126;
    }
    pid_t pid;
    if ((rc = start_child(exe, o.cmd, &pid)) >= 0 ||
        (rc = judge_preload(watch_preload(pid, &lib_st), pid, lib, exe, o.allow)) >= 0)
        return rc;
    return wait_child(pid);
}
