/* The kernels through the public C API (csrc/adaptopt.h), on files: built
 * once for the host (x86-64) and once for aarch64 (run under qemu-user) by
 * tools/aarch64/run.py, which compares the two outputs bit for bit.
 *
 *   harness describe             one line per algorithm, from the C API's
 *                                registry (adaptopt_get_algo_info): algo
 *                                name nbuf nscal, then every flag value
 *                                adaptopt_step accepts, found by asking it
 *                                (an empty batch): no table here
 *   harness run IN OUT           every case of IN through adaptopt_step
 *                                (one array, one thread); OUT gets the
 *                                buffers after the step
 *
 * IN is a sequence of cases, little-endian, each:
 *   int32 algo, dtype, flags, nbuf, nscal; uint64 n, off;
 *   double scal[nscal]; then nbuf buffers of n elements of the dtype.
 * Each buffer is copied to 64-byte aligned memory at element offset off,
 * so the kernels also start unaligned.  OUT: the nbuf buffers, n elements
 * each, case after case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adaptopt.h"

#define MAX_BUF ADAPTOPT_MAX_NBUF

static int describe(void)
{
    size_t zero = 0;
    void *ptr[MAX_BUF] = {0};
    double scal[ADAPTOPT_MAX_NSCAL] = {0};
    for (int algo = 0; algo < ADAPTOPT_N_ALGOS; algo++) {
        const adaptopt_algo_info *a = adaptopt_get_algo_info(algo);
        if (!a || a->nbuf > MAX_BUF || a->nscal > ADAPTOPT_MAX_NSCAL)
            return 2;
        printf("%d %s %d %d", algo, a->name, a->nbuf, a->nscal);
        for (int f = 0; f < 1024; f++)
            if (adaptopt_step(algo, 0, 0, (size_t)a->nbuf, ptr, &zero, scal, (size_t)a->nscal,
                              f, 1) == ADAPTOPT_OK)
                printf(" %d", f);
        printf("\n");
    }
    return 0;
}

static void *xmalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1)) {
        fprintf(stderr, "harness: out of memory\n");
        exit(2);
    }
    return p;
}

static int readn(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n;
}

static int run(const char *in_path, const char *out_path)
{
    FILE *in = fopen(in_path, "rb"), *out = fopen(out_path, "wb");
    if (!in || !out) {
        perror("harness");
        return 2;
    }
    long cases = 0;
    for (;;) {
        int32_t hdr[5];
        uint64_t n, off;
        if (!readn(in, hdr, sizeof hdr))
            break;  /* end of input */
        int algo = hdr[0], dtype = hdr[1], flags = hdr[2], nbuf = hdr[3], nscal = hdr[4];
        double scal[ADAPTOPT_MAX_NSCAL];
        if (!readn(in, &n, 8) || !readn(in, &off, 8) || nbuf < 1 || nbuf > MAX_BUF
            || nscal < 0 || nscal > ADAPTOPT_MAX_NSCAL || !readn(in, scal, 8 * (size_t)nscal)) {
            fprintf(stderr, "harness: malformed case %ld\n", cases);
            return 2;
        }
        size_t es = dtype == ADAPTOPT_FLOAT32 ? 4 : 8;
        void *mem[MAX_BUF], *ptr[MAX_BUF];
        for (int k = 0; k < nbuf; k++) {
            mem[k] = xmalloc((n + off) * es);
            ptr[k] = (char *)mem[k] + off * es;
            if (!readn(in, ptr[k], n * es)) {
                fprintf(stderr, "harness: truncated case %ld\n", cases);
                return 2;
            }
        }
        size_t offsets[2] = {0, n};
        int rc = adaptopt_step(algo, dtype, 1, (size_t)nbuf, ptr, offsets, scal, (size_t)nscal,
                               flags, 1);
        if (rc != ADAPTOPT_OK) {
            fprintf(stderr, "harness: case %ld: adaptopt_step returned %d\n", cases, rc);
            return 2;
        }
        for (int k = 0; k < nbuf; k++) {
            fwrite(ptr[k], 1, n * es, out);
            free(mem[k]);
        }
        cases++;
    }
    fclose(in);
    if (fclose(out)) {
        perror("harness");
        return 2;
    }
    printf("harness: %ld cases, isa %s, compiler %s\n", cases,
           adaptopt_isa_name(adaptopt_get_isa()), adaptopt_compiler());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "describe"))
        return describe();
    if (argc == 4 && !strcmp(argv[1], "run"))
        return run(argv[2], argv[3]);
    fprintf(stderr, "usage: %s describe | run IN OUT\n", argv[0]);
    return 2;
}
