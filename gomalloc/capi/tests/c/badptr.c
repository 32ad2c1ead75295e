/*
 * Hands free()/realloc() a pointer the allocator never gave out. Run under
 * LD_PRELOAD by gomalloc/capi/tests/preload.rs, which expects the process to
 * die of SIGABRT with "gomalloc: fatal:" and "invalid pointer" on stderr.
 *
 *   badptr MODE
 *
 * MODE:
 *   stack             free() of a stack address
 *   interior          free(p + 8) of a malloc'ed 64-byte block
 *   foreign           free() of an address from mmap
 *   realloc           realloc() of a stack address
 *   large_interior    free(p + 4096) of a malloc'ed 1 MiB block
 *   realloc_interior  realloc(p + 16, 100) of a malloc'ed 256-byte block
 *
 * If the bad call returns, prints "badptr: survived" and exits 3.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Launders a pointer so the compiler cannot see where it came from (and
 * neither warns about nor optimizes the deliberate misuse). */
static void *launder(void *p) {
    void *volatile v = p;
    return v;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: badptr MODE\n");
        return 2;
    }
    const char *mode = argv[1];

    /* get the allocator going with a few ordinary blocks first */
    void *warm[8];
    for (int i = 0; i < 8; i++) {
        warm[i] = malloc((size_t)16 << i);
        if (!warm[i]) return 2;
        memset(warm[i], i, (size_t)16 << i);
    }

    char stack_buf[256];
    memset(stack_buf, 0, sizeof stack_buf);
    fflush(stdout);

    if (strcmp(mode, "stack") == 0) {
        free(launder(stack_buf + 64));
    } else if (strcmp(mode, "interior") == 0) {
        char *p = malloc(64);
        if (!p) return 2;
        memset(p, 1, 64);
        free(launder(p + 8));
    } else if (strcmp(mode, "foreign") == 0) {
        void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return 2;
        memset(m, 1, 1 << 20);
        free(launder((char *)m + 4096));
    } else if (strcmp(mode, "realloc") == 0) {
        void *r = realloc(launder(stack_buf + 32), 100);
        printf("realloc returned %p\n", r);
    } else if (strcmp(mode, "large_interior") == 0) {
        char *p = malloc(1 << 20);
        if (!p) return 2;
        memset(p, 1, 1 << 20);
        free(launder(p + 4096));
    } else if (strcmp(mode, "realloc_interior") == 0) {
        char *p = malloc(256);
        if (!p) return 2;
        memset(p, 1, 256);
        void *r = realloc(launder(p + 16), 100);
        printf("realloc returned %p\n", r);
    } else {
        fprintf(stderr, "badptr: unknown mode %s\n", mode);
        return 2;
    }

    for (int i = 0; i < 8; i++) free(warm[i]);
    printf("badptr: survived\n");
    fflush(stdout);
    return 3;
}
