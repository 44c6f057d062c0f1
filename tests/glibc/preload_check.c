/* Linked into every glibc test program that run.sh builds.  Before main, in the test
 * driver and (through fork) in the test itself, it checks that the preload took effect:
 * the process's malloc is ebbmalloc's, and a block that libc allocates for itself
 * (strdup) comes from ebbmalloc.  It then leaves a mark in $EBB_GLIBC_MARK, so that
 * run.sh knows the check ran; a program in which it fails exits 127 before its test. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

__attribute__((constructor)) static void ebb_preload_check(void) {
    void *libc_malloc = dlsym(RTLD_DEFAULT, "malloc");
    void *ebb_malloc = dlsym(RTLD_DEFAULT, "ebb_malloc");
    size_t (*ebb_usable)(void *) = (size_t(*)(void *))dlsym(RTLD_DEFAULT, "ebb_malloc_usable_size");
    char *s = strdup("libc allocates this");
    if (!ebb_malloc || libc_malloc != ebb_malloc || !ebb_usable || !s || ebb_usable(s) == 0) {
        say("preload_check: malloc is not ebbmalloc's (LD_PRELOAD did not take effect)\n");
        _exit(127);
    }
    free(s);
    const char *mark = getenv("EBB_GLIBC_MARK");
    if (mark) {
        int fd = open(mark, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ssize_t r = write(fd, "ebbmalloc\n", 10);
            (void)r;
            close(fd);
        }
    }
}
