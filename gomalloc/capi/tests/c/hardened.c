/*
 * Misuses that libgomalloc.so built with the `hardened` feature must stop.
 * Run under LD_PRELOAD by gomalloc/capi/tests/preload.rs (with the feature
 * on), which expects the process to die of SIGABRT with "gomalloc: fatal:"
 * and the check's message on stderr, after "hardened: misusing now".
 *
 *   hardened MODE
 *
 * MODE:
 *   double_free        free() of a 64-byte block twice
 *   double_free_large  free() of a 1 MiB block twice
 *   large_overflow     one byte written past a 100000-byte block, then free()
 *   corrupt_link       a freed 200-byte block's first word overwritten with
 *                      the address of a live block, then malloc() twice
 *   usable             no misuse: malloc_usable_size() of a large block is
 *                      its requested size, and writing all of it is fine;
 *                      exits 0 and prints "hardened: usable ok"
 *
 * Prints "hardened: MODE" first.
 *
 * If the bad call returns, prints "hardened: survived" and exits 3.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

/* Launders a pointer so the compiler cannot see where it came from (and
 * neither warns about nor optimizes the deliberate misuse). */
static void *launder(void *p) {
    void *volatile v = p;
    return v;
}

/* Allocates n blocks of size bytes, fills each with its own pattern, and
 * verifies them all; exits 2 on any failure. */
static void patterned(void **out, int n, size_t size) {
    for (int k = 0; k < n; k++) {
        unsigned char *p = malloc(size);
        if (!p) exit(2);
        for (size_t i = 0; i < size; i++) p[i] = (unsigned char)(k * 131 + i * 7);
        out[k] = p;
    }
    for (int k = 0; k < n; k++) {
        unsigned char *p = out[k];
        for (size_t i = 0; i < size; i++)
            if (p[i] != (unsigned char)(k * 131 + i * 7)) {
                fprintf(stderr, "hardened: block %d byte %zu corrupted\n", k, i);
                exit(2);
            }
    }
}

static void misusing_now(void) {
    printf("hardened: misusing now\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: hardened MODE\n");
        return 2;
    }
    const char *mode = argv[1];
    void *objs[16];
    /* stdout's buffer (a large block when stdout is a pipe) is allocated
     * now, not between the two frees of a double free, where it could take
     * the freed block's pages at the same address. */
    printf("hardened: %s\n", mode);
    fflush(stdout);

    if (strcmp(mode, "double_free") == 0) {
        patterned(objs, 16, 64);
        free(objs[5]);
        misusing_now();
        free(launder(objs[5]));
    } else if (strcmp(mode, "double_free_large") == 0) {
        patterned(objs, 4, 1 << 20);
        free(objs[1]);
        misusing_now();
        free(launder(objs[1]));
    } else if (strcmp(mode, "large_overflow") == 0) {
        patterned(objs, 4, 100000);
        misusing_now();
        unsigned char *past = (unsigned char *)launder(objs[2]) + 100000;
        *past = (unsigned char)~*past;
        free(objs[2]);
    } else if (strcmp(mode, "corrupt_link") == 0) {
        patterned(objs, 8, 200);
        free(objs[7]);
        misusing_now();
        /* a use after free poisons the freed block's link */
        *(uintptr_t *)launder(objs[7]) = (uintptr_t)objs[0];
        void *a = malloc(200);
        void *b = malloc(200);
        printf("malloc returned %p and %p\n", a, b);
    } else if (strcmp(mode, "usable") == 0) {
        patterned(objs, 4, 100000);
        for (int k = 0; k < 4; k++) {
            size_t n = malloc_usable_size(objs[k]);
            if (n != 100000) {
                fprintf(stderr, "hardened: malloc_usable_size = %zu, want 100000\n", n);
                return 1;
            }
            memset(objs[k], 0x5A, n);
        }
        void *r = realloc(objs[0], 250000);
        if (!r || malloc_usable_size(r) != 250000) return 1;
        memset(r, 0xA5, 250000);
        r = realloc(r, 50000);
        if (!r || malloc_usable_size(r) != 50000) return 1;
        free(r);
        for (int k = 1; k < 4; k++) free(objs[k]);
        printf("hardened: usable ok\n");
        return 0;
    } else {
        fprintf(stderr, "hardened: unknown mode %s\n", mode);
        return 2;
    }

    printf("hardened: survived\n");
    fflush(stdout);
    return 3;
}
