/* Strided arrays read and written in a dense array's element order: the
 * gradients of adaptopt_step_strided (dispatch.c) and of the staging layer
 * (staging.c.inc).  Header-only, so that each ISA's objects (and the
 * emulator's freestanding build) carry their own copy. */
#ifndef ADAPTOPT_GATHER_H
#define ADAPTOPT_GATHER_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "adaptopt.h"

/* Elements [off, off+m) of a strided array (d = {ndim, shape, byte strides},
 * adaptopt_step_strided) at base copied to or from (scatter) the dense
 * array dst of m elements of esize bytes (2, 4 or 8). */
static inline void adaptopt_gather(void *dst, const void *base, const int64_t *d,
                                   size_t esize, size_t off, size_t m, int scatter)
{
    int64_t idx[ADAPTOPT_MAX_NDIM];
    const int nd = (int)d[0];
    const int64_t *shape = d + 1, *str = d + 1 + nd;
    const int64_t inner = shape[nd - 1], istr = str[nd - 1];
    char *gp = (char *)base, *out = (char *)dst;
    size_t x = off, j = 0;
    for (int k = nd - 1; k >= 0; k--) {  /* the multi-index of element off */
        idx[k] = (int64_t)(x % (size_t)shape[k]);
        x /= (size_t)shape[k];
        gp += idx[k] * str[k];
    }
    while (j < m) {
        size_t run = (size_t)(inner - idx[nd - 1]);
        if (run > m - j)
            run = m - j;
#define ADAPTOPT_RUN_(T)                                                          \
        for (size_t q = 0; q < run; q++) {                                        \
            if (scatter) memcpy(gp + (int64_t)q * istr, out + (j + q) * sizeof(T), sizeof(T)); \
            else memcpy(out + (j + q) * sizeof(T), gp + (int64_t)q * istr, sizeof(T)); \
        }
        if (esize == 2) { ADAPTOPT_RUN_(uint16_t) }
        else if (esize == 4) { ADAPTOPT_RUN_(uint32_t) }
        else { ADAPTOPT_RUN_(uint64_t) }
#undef ADAPTOPT_RUN_
        j += run;
        idx[nd - 1] += (int64_t)run;
        gp += (int64_t)run * istr;
        for (int k = nd - 1; k > 0 && idx[k] == shape[k]; k--) {  /* carry */
            gp += str[k - 1] - shape[k] * str[k];
            idx[k] = 0;
            idx[k - 1]++;
        }
    }
}

#endif
