#define _GNU_SOURCE
#include "fake_publish.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "procfs.h"

unsigned long long fake_pid_ns(void) {
    struct stat sb;
    return stat("/proc/self/ns/pid", &sb) == 0 ? (unsigned long long)sb.st_ino : 0;
}

uint64_t fake_start_time(void) {
    char buf[1024];
    struct procfs_stat st;
    if (!procfs_read_buf("/proc/self/stat", buf, sizeof(buf)) || procfs_parse_stat(buf, &st) < 0) return 0;
    return st.start_time;
}

uint64_t fake_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void *fake_map_file(const char *path, size_t size, int *fdp) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror(path);
        exit(1);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    *fdp = fd;
    return p;
}

void fake_stats_header(struct ebb_shm_page *pg) {
    pg->magic = EBB_SHM_MAGIC;
    pg->version = EBB_SHM_VERSION;
    pg->size = sizeof(*pg);
    pg->pid = getpid();
    pg->start_time = fake_start_time();
    pg->seq = 2;
}

void fake_serve(void) {
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
