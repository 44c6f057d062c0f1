/* Symbolisation in ebb-inspect, never in the target: what each recorded return address is.
 *
 * Rules, for a return address pc recorded by the sampler:
 *  - pc - 1 is looked up, not pc: a return address follows the call, and when the call is
 *    the last instruction of a function (a noreturn callee) pc already lies in the next
 *    one.  The offset printed is still that of pc, as objdump and debuggers show it.
 *  - The mapping holding pc - 1 comes from the process's /proc/PID/maps, read again after
 *    the table was copied (a library loaded since the inspection began is seen).
 *  - The mapped file is opened through /proc/PID/root when that name is the mapped file
 *    (same device and inode), else through /proc/PID/map_files, so a process in a container
 *    is symbolised from its own files, seen from the host.
 *  - pc's file offset (pc - start + offset of the mapping) is turned into an ELF virtual
 *    address through the file's PT_LOAD headers; elfutils' libdwfl then finds the symbol
 *    that covers it in .symtab (or, for a stripped file, .dynsym, or a separate debug file
 *    found by build id or .gnu_debuglink under /usr/lib/debug), and the source line where
 *    DWARF line information exists.  debuginfod is never asked (no network).
 *  - C++ names (_Z...) are demangled with the C++ ABI's __cxa_demangle; other names, JNI
 *    entry points (Java_pkg_Class_method) among them, are shown whole.
 *  - Memory not backed by a file (anonymous, [anon:...]) is "[jit or anonymous 0x...]":
 *    in a JVM, JIT-compiled Java code, which has no symbols.  No mapping at all: a library
 *    unloaded since the sample, "[unmapped 0x...]".  Address 0 is the stack a full table
 *    counts the samples it could not place under: "[other stacks: ...]". 
 * Each file is opened once per run (keyed by device and inode), each address looked up
 * once per (address, file, load address). */
#define _GNU_SOURCE
#include <elfutils/libdwfl.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "inspect.h"

/* The C++ ABI's demangler (libstdc++). */
extern char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status);

/* One ELF file of the target, opened once.  failed: unreadable or not ELF; its frames
 * then show as library+file offset. */
struct symfile {
    dev_t dev;
    uint64_t ino;
    char *path, *module, *build_id;
    Dwfl *dwfl;
    Dwfl_Module *mod;
    GElf_Phdr *load; /* PT_LOAD headers */
    size_t nload;
    bool failed;
    struct symfile *next;
};

struct symentry {
    uint64_t pc, ident, base; /* the address, and what it was looked up in */
    struct frame_sym fs;
    char *own[5]; /* strings fs points to that this entry owns */
    struct symentry *next;
};

#define SYM_BUCKETS 4096
struct symbolizer {
    struct symfile *files;
    struct symentry *bucket[SYM_BUCKETS];
};

static char *debuginfo_path;
static const Dwfl_Callbacks dwfl_cb = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .debuginfo_path = &debuginfo_path,
};

struct symbolizer *sym_new(void) {
    /* the target's libraries are on this machine: never wait on a debuginfod server */
    unsetenv("DEBUGINFOD_URLS");
    return calloc(1, sizeof(struct symbolizer));
}

void sym_free(struct symbolizer *s) {
    if (!s) return;
    for (size_t b = 0; b < SYM_BUCKETS; b++)
        for (struct symentry *e = s->bucket[b], *n; e; e = n) {
            n = e->next;
            for (size_t k = 0; k < 5; k++) free(e->own[k]);
            free(e);
        }
    for (struct symfile *f = s->files, *n; f; f = n) {
        n = f->next;
        if (f->dwfl) dwfl_end(f->dwfl);
        free(f->path);
        free(f->module);
        free(f->build_id);
        free(f->load);
        free(f);
    }
    free(s);
}

static const char *base_name(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

/* The allocator, libc, the dynamic loader and the C++ runtime: their frames are how memory
 * was asked for (operator new, strdup, fopen), not who asked.  heap_attribute skips them. */
static bool runtime_module(const char *m) {
    static const char *const pre[] = {"libebbmalloc", "libc.so",   "libc-",    "ld-linux",
                                      "ld-",          "libstdc++", "libgcc_s", "libpthread",
                                      "libc++",       "libc.musl", "ld-musl"};
    for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
        if (!strncmp(m, pre[i], strlen(pre[i]))) return true;
    return false;
}

/* The path without the kernel's " (deleted)" suffix. */
static char *clean_path(const char *p) {
    char *c = strdup(p);
    size_t n = c ? strlen(c) : 0;
    if (n > 10 && !strcmp(c + n - 10, " (deleted)")) c[n - 10] = '\0';
    return c;
}

static struct symfile *file_for(struct symbolizer *s, const struct inspection *in,
                                const struct procfs_vma *v) {
    dev_t dev = makedev(v->dev_major, v->dev_minor);
    for (struct symfile *f = s->files; f; f = f->next)
        if (f->dev == dev && f->ino == v->inode) return f;
    struct symfile *f = calloc(1, sizeof(*f));
    if (!f) return NULL;
    f->dev = dev;
    f->ino = v->inode;
    f->path = clean_path(v->path);
    f->module = strdup(base_name(f->path ? f->path : ""));
    f->next = s->files;
    s->files = f;
    f->failed = true;
    bool via;
    int fd = shm_open_mapped(in, v, &via);
    if (fd < 0) return f;
    f->dwfl = dwfl_begin(&dwfl_cb);
    if (!f->dwfl) {
        close(fd);
        return f;
    }
    dwfl_report_begin(f->dwfl);
    /* base 0 relative to p_vaddr: the module's addresses are the file's own virtual
     * addresses, whatever the target's load address */
    f->mod = dwfl_report_elf(f->dwfl, f->module, f->path, fd, 0, true);
    dwfl_report_end(f->dwfl, NULL, NULL);
    if (!f->mod) {
        close(fd); /* not consumed on failure */
        return f;
    }
    GElf_Addr bias;
    Elf *e = dwfl_module_getelf(f->mod, &bias);
    size_t np;
    if (!e || elf_getphdrnum(e, &np) != 0) return f;
    f->load = calloc(np ? np : 1, sizeof(GElf_Phdr));
    for (size_t i = 0; f->load && i < np; i++) {
        GElf_Phdr ph;
        if (gelf_getphdr(e, (int)i, &ph) && ph.p_type == PT_LOAD) f->load[f->nload++] = ph;
    }
    const unsigned char *bits;
    GElf_Addr bvaddr;
    int bl = dwfl_module_build_id(f->mod, &bits, &bvaddr);
    if (bl > 0 && (f->build_id = malloc((size_t)bl * 2 + 1)))
        for (int i = 0; i < bl; i++) sprintf(f->build_id + 2 * i, "%02x", bits[i]);
    f->failed = f->nload == 0;
    return f;
}

/* Files that are anonymous memory by another name (shared anonymous, memfd, SysV). */
static bool anon_file(const char *p) {
    return !strncmp(p, "/dev/zero", 9) || !strncmp(p, "/SYSV", 5) || !strncmp(p, "/memfd:", 7) ||
           !strncmp(p, "/anon_hugepage", 14);
}

static const struct procfs_vma *vma_at(const struct procfs_vmas *m, uint64_t a) {
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a < m->v[mid].start) hi = mid;
        else if (a >= m->v[mid].end) lo = mid + 1;
        else return &m->v[mid];
    }
    return NULL;
}

/* Keep text printable: a symbol table is data from the target's files. */
static char *sane(char *t) {
    for (char *c = t; c && *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    return t;
}

/* A formatted name, printable. */
#define sane_printf(...) sane(str_printf(__VA_ARGS__))

static void describe_file(struct symentry *e, struct symfile *f, const struct procfs_vma *v, uint64_t q) {
    struct frame_sym *fs = &e->fs;
    fs->kind = FRAME_FILE;
    fs->module = f->module;
    fs->path = f->path;
    fs->build_id = f->build_id;
    uint64_t fo = q - v->start + v->offset;
    bool have_addr = false;
    uint64_t addr = 0;
    for (size_t i = 0; !f->failed && i < f->nload; i++) {
        const GElf_Phdr *ph = &f->load[i];
        if (fo >= ph->p_offset && fo - ph->p_offset < ph->p_filesz) {
            addr = ph->p_vaddr + (fo - ph->p_offset);
            have_addr = true;
            break;
        }
    }
    if (!have_addr) {
        fs->rel = fo + 1;
        e->own[0] = sane_printf("%s+0x%" PRIx64, f->module, fs->rel);
        fs->text = fs->key = e->own[0];
        return;
    }
    fs->rel = addr + 1;
    GElf_Off off = 0;
    GElf_Sym sym;
    const char *name = dwfl_module_addrinfo(f->mod, addr, &off, &sym, NULL, NULL, NULL);
    if (name && *name) {
        e->own[1] = sane(strdup(name));
        fs->system_name = e->own[1];
        int st = -1;
        char *dm = !strncmp(name, "_Z", 2) ? __cxa_demangle(name, NULL, NULL, &st) : NULL;
        e->own[2] = sane(st == 0 && dm ? dm : strdup(name));
        if (!(st == 0 && dm)) free(dm);
        fs->function = e->own[2];
        fs->offset = off + 1;
    }
    Dwfl_Line *l = dwfl_module_getsrc(f->mod, addr);
    int line = 0;
    const char *src = l ? dwfl_lineinfo(l, NULL, &line, NULL, NULL, NULL) : NULL;
    if (src && line > 0) {
        e->own[3] = sane(strdup(src));
        fs->src_file = e->own[3];
        fs->line = line;
    }
    if (fs->function) e->own[4] = sane_printf("%s!%s+0x%" PRIx64, f->module, fs->function, fs->offset);
    else e->own[4] = sane_printf("%s+0x%" PRIx64, f->module, fs->rel);
    fs->key = e->own[4];
    if (fs->src_file) e->own[0] = sane_printf("%s (%s:%d)", fs->key, base_name(fs->src_file), fs->line);
    fs->text = e->own[0] ? e->own[0] : fs->key;
}

const struct frame_sym *sym_lookup(struct symbolizer *s, const struct inspection *in,
                                   const struct procfs_vmas *maps, uint64_t pc) {
    uint64_t q = pc ? pc - 1 : 0;
    const struct procfs_vma *v = vma_at(maps, q);
    enum frame_kind kind = FRAME_UNMAPPED;
    uint64_t ident = 1, base = 0;
    if (v && v->inode && v->path[0] == '/' && !anon_file(v->path)) {
        kind = FRAME_FILE;
        ident = ((uint64_t)makedev(v->dev_major, v->dev_minor) << 32) ^ v->inode ^ 0x8000000000000000ull;
        base = v->start - v->offset;
    } else if (v && v->path[0] == '[' && strncmp(v->path, "[anon:", 6)) {
        kind = FRAME_SPECIAL;
        ident = 3;
        base = v->start;
    } else if (v) {
        kind = FRAME_ANON;
        ident = 2;
    }
    size_t b = (size_t)((pc * 0x9e3779b97f4a7c15ull ^ ident ^ base) >> 52) % SYM_BUCKETS;
    for (struct symentry *e = s->bucket[b]; e; e = e->next)
        if (e->pc == pc && e->ident == ident && e->base == base) return &e->fs;
    struct symentry *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->pc = pc;
    e->ident = ident;
    e->base = base;
    struct frame_sym *fs = &e->fs;
    fs->pc = pc;
    fs->module = "";
    if (v) {
        fs->map_start = v->start;
        fs->map_end = v->end;
        fs->map_offset = v->offset;
    }
    struct symfile *f = kind == FRAME_FILE ? file_for(s, in, v) : NULL;
    if (kind == FRAME_FILE && f) {
        describe_file(e, f, v, q);
        fs->runtime = runtime_module(f->module);
    } else if (kind == FRAME_SPECIAL) {
        fs->kind = FRAME_SPECIAL;
        e->own[1] = strdup(v->path);
        fs->module = e->own[1];
        size_t nl = strlen(v->path);
        e->own[0] = sane_printf("[%.*s 0x%" PRIx64 "]", (int)(nl > 2 ? nl - 2 : 0), v->path + 1, pc);
        fs->text = e->own[0];
        fs->key = fs->module;
    } else if (kind == FRAME_ANON || kind == FRAME_FILE) {
        fs->kind = FRAME_ANON;
        e->own[0] = sane_printf("[jit or anonymous 0x%" PRIx64 "]", pc);
        fs->text = e->own[0];
        fs->key = "[jit or anonymous]";
    } else if (!pc) {
        /* a table that ran out of slots may count the rest under one stack of frame 0 */
        fs->kind = FRAME_UNMAPPED;
        fs->text = "[other stacks: not recorded, the table was full]";
        fs->key = "[table full]";
    } else {
        fs->kind = FRAME_UNMAPPED;
        e->own[0] = sane_printf("[unmapped 0x%" PRIx64 "]", pc);
        fs->text = e->own[0];
        fs->key = "[unmapped]";
    }
    if (!fs->text) fs->text = fs->key = "?";
    e->next = s->bucket[b];
    s->bucket[b] = e;
    return fs;
}

static const struct frame_sym unknown_frame = {
    .kind = FRAME_UNMAPPED, .module = "", .text = "[not symbolised: out of memory]", .key = "?"};

int heap_symbolize(struct symbolizer *s, const struct inspection *in, struct heap_profile *hp) {
    struct procfs_vmas m = {0};
    char *text = proc_read(&in->proc, "maps", NULL);
    int rc = 0;
    const struct procfs_vmas *use = &m;
    if (!text || procfs_vmas_parse(&m, text, false) < 0) {
        use = &in->maps; /* the inspection's own, a moment older */
        rc = -1;
    }
    for (size_t i = 0; i < hp->n; i++) {
        struct heap_stack *st = &hp->st[i];
        if (!st->pcs) continue;
        free(st->sym);
        st->sym = calloc(st->depth ? st->depth : 1, sizeof(st->sym[0]));
        if (!st->sym) {
            rc = -1;
            break;
        }
        for (uint32_t k = 0; k < st->depth; k++) {
            st->sym[k] = sym_lookup(s, in, use, st->pcs[k]);
            if (!st->sym[k]) st->sym[k] = &unknown_frame;
        }
    }
    procfs_vmas_free(&m);
    free(text);
    return rc;
}
