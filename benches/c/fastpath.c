/* The malloc/free fast path in instructions, for callgrind.
 *
 * usage: fastpath SIZE PAIRS
 * Warms the allocator (1000 objects of SIZE allocated and freed), then runs
 * PAIRS of p = malloc(SIZE); free(p) in the function `pairs`, which
 * callgrind measures alone (--toggle-collect=pairs). Instructions per pair =
 * (Ir(PAIRS = 2N) - Ir(PAIRS = N)) / N, so the loop's set-up cancels out.
 */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void pairs(size_t size, long n) {
    for (long i = 0; i < n; i++) {
        void *volatile p = malloc(size);
        *(volatile char *)p = 1;
        free(p);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fastpath SIZE PAIRS\n");
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 10);
    long n = strtol(argv[2], NULL, 10);
    void *warm[1000];
    for (int i = 0; i < 1000; i++) warm[i] = malloc(size);
    for (int i = 0; i < 1000; i++) free(warm[i]);
    pairs(size, n);
    return 0;
}
