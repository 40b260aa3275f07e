/* Bare metal, on an emulated AVX-512 CPU: every kernel of the avx512 table
 * against the scalar table on the same inputs, bit for bit (all algorithms,
 * dtypes and flag combinations, sizes around the vector widths, unaligned
 * starts, zeros, signed zeros, subnormals and huge values), and the loops of
 * the row updates (rows.c.inc), the 8-bit state's codecs (quant.c.inc)
 * and Adam with 8-bit moments through the staging layer.  The scalar
 * kernels are the ones tests/test_parity.py holds to the NumPy reference.
 * Prints its verdict on the serial port, then powers bochs off. */
#include "internal.h"
#include "convert.h"
#include "quant.h"

void *memcpy(void *d, const void *s, size_t n) { char *a = d; const char *b = s; while (n--) *a++ = *b++; return d; }
void *memmove(void *d, const void *s, size_t n) {
    char *a = d; const char *b = s;
    if (a < b) while (n--) *a++ = *b++; else { a += n; b += n; while (n--) *--a = *--b; }
    return d;
}
void *memset(void *d, int c, size_t n) { char *a = d; while (n--) *a++ = (char)c; return d; }
int memcmp(const void *x, const void *y, size_t n) {
    const unsigned char *a = x, *b = y;
    for (; n; n--, a++, b++) if (*a != *b) return *a < *b ? -1 : 1;
    return 0;
}

static inline void outb(unsigned short port, unsigned char v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline unsigned char inb(unsigned short port) { unsigned char v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static void putc_(char c) { while (!(inb(0x3FD) & 0x20)) {} outb(0x3F8, (unsigned char)c); }
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putn(long v) {
    char buf[24]; int i = 0;
    if (v < 0) { putc_('-'); v = -v; }
    do { buf[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) putc_(buf[--i]);
}

static unsigned char arena[64 << 20] __attribute__((aligned(64)));
static size_t used;
static void *alloc(size_t n) { void *p = arena + used; used += (n + 63) & ~(size_t)63; return p; }

static unsigned long long s = 88172645463325252ULL;
static unsigned long long rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

static double value(int nonneg) {
    unsigned long long r = rnd();
    double v;
    switch (r % 16) {
    case 0: return 0.0;
    case 1: return nonneg ? 0.0 : -0.0;
    case 2: return 1e-40;
    case 3: return 1e30;
    case 4: return nonneg ? 1e30 : -1e30;
    case 5: return 1e-310;
    default:
        v = (double)(rnd() % 1000000) / 1e6 + 0.001;
        for (int e = (int)(rnd() % 40) - 20; e > 0; e--) v *= 2;
        for (int e = (int)(rnd() % 40) - 20; e < 0; e++) v *= 0.5;
        if (!nonneg && (rnd() & 1)) v = -v;
        return v;
    }
}

static void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* Per algorithm (algorithms.h): buffers and public flag combinations. */
#define NBUF_(name, NAME, t32, t64) ADAPTOPT_##NAME##_NBUF,
#define NFLAGS_(name, NAME, t32, t64) (1 << ADAPTOPT_##NAME##_NFLAGS),
static const int nbuf[] = {ADAPTOPT_ALGORITHMS(NBUF_)};
static const int nflags[] = {ADAPTOPT_ALGORITHMS(NFLAGS_)};

/* Scalars by position, three variants: small weights, weights >= 0.5 (the
 * lerp's second form), and factors of exactly 1 (skipped divisions). */
static const double scalars[3][ADAPTOPT_MAX_NSCAL] = {
    {0.1, 0.999, 0.001, 0.01, 1e-8, 0.3, -0.001, 0.9, 0.5, 1e-3, 2.0, -0.01, 0.25, 1.5, 1e-6, 0.75},
    {0.7, 0.3, 0.7, 0.999, 1e-8, 0.3, -0.01, 0.5, 0.6, 1e-2, 0.5, -0.1, 0.75, 1.2, 1e-8, 0.6},
    {0.1, 0.999, 0.001, 0.01, 1e-8, 1.0, -0.001, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0},
};

void kmain(void) {
    static const size_t sizes[] = {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4097};
    unsigned r[4];
    cpuid(7, 0, r);
    puts_("bm: avx512f="); putn((r[1] >> 16) & 1); puts_(" dq="); putn((r[1] >> 17) & 1);
    puts_(" bw="); putn((r[1] >> 30) & 1); puts_(" vl="); putn((r[1] >> 31) & 1); puts_("\n");
    if (!((r[1] >> 16) & 1)) { puts_("AVX512-UNAVAILABLE\n"); return; }
    long checked = 0, bad = 0;
    for (int algo = 0; algo < ADAPTOPT_N_ALGOS; algo++)
    for (int dt = 0; dt < 2; dt++)
    for (int flags = 0; flags < nflags[algo]; flags++)
    for (int variant = 0; variant < 3; variant++)
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si], es = dt ? 8 : 4, mark = used;
        void *a[ADAPTOPT_MAX_NBUF], *b[ADAPTOPT_MAX_NBUF];
        for (int k = 0; k < nbuf[algo]; k++) {
            a[k] = alloc((n + 16) * es);
            b[k] = alloc((n + 16) * es);
            int nonneg = k >= 2;  /* p and g signed; state non-negative (no NaN from sqrt) */
            for (size_t j = 0; j < n + 16; j++) {
                double v = value(nonneg);
                if (dt) ((double *)a[k])[j] = v; else ((float *)a[k])[j] = (float)v;
            }
            memcpy(b[k], a[k], (n + 16) * es);
        }
        union { float f[ADAPTOPT_MAX_NSCAL]; double d[ADAPTOPT_MAX_NSCAL]; } u;
        for (int k = 0; k < ADAPTOPT_MAX_NSCAL; k++) {
            if (dt) u.d[k] = scalars[variant][k]; else u.f[k] = (float)scalars[variant][k];
        }
        size_t off = (size_t)variant <= n ? (size_t)variant : 0;
        adaptopt_table_scalar.step[algo][dt]((void *const *)a, off, n - off, &u, flags);
        adaptopt_table_avx512.step[algo][dt]((void *const *)b, off, n - off, &u, flags);
        for (int k = 0; k < nbuf[algo]; k++) {
            checked++;
            if (memcmp(a[k], b[k], (n + 16) * es)) {
                if (bad < 20) {
                    puts_("MISMATCH algo "); putn(algo); puts_(" dtype "); putn(dt);
                    puts_(" flags "); putn(flags); puts_(" variant "); putn(variant);
                    puts_(" n "); putn((long)n); puts_(" buffer "); putn(k); puts_("\n");
                }
                bad++;
            }
        }
        used = mark;
    }
    /* The staging layer (16-bit storage, master weights, stochastic
     * rounding, gradient scaling) over every algorithm's float32 kernel. */
    static const struct { unsigned char p, g, s, sr; int mirror; double div, mul; } cfg[] = {
        {ADAPTOPT_STORE_BF16, ADAPTOPT_STORE_BF16, ADAPTOPT_STORE_BF16, 0, 0, 0.0, 1.0},
        {ADAPTOPT_STORE_F16, ADAPTOPT_STORE_F16, ADAPTOPT_STORE_F16, 1, 0, 0.0, 1.0},
        {ADAPTOPT_STORE_BF16, ADAPTOPT_STORE_BF16, ADAPTOPT_STORE_BF16, 1, 0, 1024.0, 0.5},
        {ADAPTOPT_STORE_COMPUTE, ADAPTOPT_STORE_BF16, ADAPTOPT_STORE_COMPUTE, 1,
         ADAPTOPT_STORE_F16, 0.0, 1.0},
        {ADAPTOPT_STORE_COMPUTE, ADAPTOPT_STORE_F16, ADAPTOPT_STORE_F16, 0,
         ADAPTOPT_STORE_BF16, 0.0, 1.0},
    };
    static const size_t ssizes[] = {1, 17, 255, 256, 257, 600};
    for (int algo = 0; algo < ADAPTOPT_N_ALGOS; algo++)
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
    for (int flags = 0; flags < nflags[algo]; flags += 1 + (nflags[algo] > 8))
    for (size_t si = 0; si < sizeof ssizes / sizeof *ssizes; si++) {
        size_t n = ssizes[si], mark = used;
        adaptopt_staging st = {0};
        st.compute = ADAPTOPT_FLOAT32;
        st.seed = 12345; st.step = 7; st.grad_div = cfg[c].div; st.grad_mul = cfg[c].mul;
        st.mirror = cfg[c].mirror; st.mirror_stochastic = cfg[c].sr && cfg[c].mirror;
        void *a[ADAPTOPT_MAX_NBUF], *b[ADAPTOPT_MAX_NBUF], *ma = 0, *mb = 0;
        size_t es[ADAPTOPT_MAX_NBUF];
        for (int k = 0; k < nbuf[algo]; k++) {
            int sk = k == 0 ? cfg[c].p : k == 1 ? cfg[c].g : cfg[c].s;
            st.storage[k] = (unsigned char)sk;
            st.stochastic[k] = (unsigned char)(k != 1 && cfg[c].sr && sk != ADAPTOPT_STORE_COMPUTE);
            es[k] = sk == ADAPTOPT_STORE_COMPUTE ? 4 : 2;
            a[k] = alloc(n * es[k] + 64);
            b[k] = alloc(n * es[k] + 64);
            for (size_t j = 0; j < n; j++) {
                float v = (float)value(k >= 2);
                if (es[k] == 4) ((float *)a[k])[j] = v;
                else ((unsigned short *)a[k])[j] = sk == ADAPTOPT_STORE_BF16
                    ? adaptopt_f32_to_bf16(v) : adaptopt_f32_to_f16(v);
            }
            memcpy(b[k], a[k], n * es[k]);
        }
        void *auxa[ADAPTOPT_MAX_NBUF] = {0}, *auxb[ADAPTOPT_MAX_NBUF] = {0};
        if (st.mirror) {
            auxa[0] = ma = alloc(2 * n + 64);
            auxb[0] = mb = alloc(2 * n + 64);
            memset(ma, 0, 2 * n); memset(mb, 0, 2 * n);
        }
        float u[ADAPTOPT_MAX_NSCAL];
        for (int k = 0; k < ADAPTOPT_MAX_NSCAL; k++) u[k] = (float)scalars[0][k];
        adaptopt_table_scalar.staged[0](adaptopt_table_scalar.step[algo][0], (void *const *)a,
                                        auxa, (size_t)nbuf[algo], 0, n, u, flags, &st, 3, NULL);
        if (c == 0)  /* every buffer bfloat16, nearest: the bodies on bfloat16 memory */
            adaptopt_table_avx512.step_bf16[algo]((void *const *)b, 0, n, u, flags);
        else
            adaptopt_table_avx512.staged[0](adaptopt_table_avx512.step[algo][0],
                                            (void *const *)b, auxb, (size_t)nbuf[algo], 0, n, u,
                                            flags, &st, 3, NULL);
        for (int k = 0; k <= nbuf[algo]; k++) {
            int diff = k < nbuf[algo] ? memcmp(a[k], b[k], n * es[k])
                                      : (st.mirror ? memcmp(ma, mb, 2 * n) : 0);
            checked++;
            if (diff) {
                if (bad < 20) {
                    puts_("MISMATCH staged algo "); putn(algo); puts_(" config "); putn((long)c);
                    puts_(" flags "); putn(flags); puts_(" n "); putn((long)n);
                    puts_(" buffer "); putn(k); puts_("\n");
                }
                bad++;
            }
        }
        used = mark;
    }
    /* 8-bit state (quant.c.inc): the block codecs on their own (both maps,
     * nearest and stochastic; random blocks, a block with an inf, a zero block,
     * a block holding every map value), every code decoded, then Adam through
     * the staging layer with m and v in 8 bits.  Kept small: bochs is slow. */
    static const size_t qsizes[] = {1, 9, 255, 256};
    for (int sg = 0; sg < 2; sg++)
    for (int sr = 0; sr < 2; sr++)
    for (int kind = 0; kind < 4; kind++)
    for (size_t si = 0; si < sizeof qsizes / sizeof *qsizes; si++) {
        size_t n = qsizes[si], mark = used;
        const float *map = sg ? adaptopt_q8_map_s : adaptopt_q8_map_u;
        float *x = alloc(4 * n), *ya = alloc(4 * n), *yb = alloc(4 * n), ma_ = 0, mb_ = 0;
        uint8_t *ca = alloc(n), *cb = alloc(n);
        for (size_t j = 0; j < n; j++)
            x[j] = kind == 2 ? 0.0f : kind == 3 ? map[j % 256] * 0.37f : (float)value(!sg);
        if (kind == 1) x[n / 2] = 1.0f / 0.0f;
        const uint64_t index0 = sr ? ((uint64_t)1 << 32) + 1000 * n : 0;
        adaptopt_table_scalar.q8.store(x, ca, &ma_, n, sg, sr, 0x9E3779B9u, index0);
        adaptopt_table_avx512.q8.store(x, cb, &mb_, n, sg, sr, 0x9E3779B9u, index0);
        if (kind == 3 && n == 256)
            for (size_t j = 0; j < n; j++) ca[j] = cb[j] = (uint8_t)j;
        adaptopt_table_scalar.q8.load(ya, ca, ma_, n, sg);
        adaptopt_table_avx512.q8.load(yb, cb, ma_, n, sg);
        checked++;
        if (memcmp(ca, cb, n) || memcmp(&ma_, &mb_, sizeof ma_) || memcmp(ya, yb, 4 * n)) {
            if (bad < 20) {
                puts_("MISMATCH q8 signed "); putn(sg); puts_(" stochastic "); putn(sr);
                puts_(" kind "); putn(kind); puts_(" n "); putn((long)n); puts_("\n");
            }
            bad++;
        }
        used = mark;
    }
    for (int sr = 0; sr < 2; sr++)
    for (int flags = 0, last = nflags[ADAPTOPT_ADAM] - 1; flags <= last; flags += last ? last : 1)
    for (size_t si = 0; si < 3; si++) {
        static const size_t n8[] = {17, 256, 600};
        const int nb = nbuf[ADAPTOPT_ADAM];
        size_t n = n8[si], nblk = (n + 255) / 256, mark = used;
        adaptopt_staging st = {0};
        st.compute = ADAPTOPT_FLOAT32;
        st.seed = 12345; st.step = 7; st.grad_div = 0.0; st.grad_mul = 1.0;
        void *a[ADAPTOPT_MAX_NBUF], *b[ADAPTOPT_MAX_NBUF];
        void *auxa[ADAPTOPT_MAX_NBUF] = {0}, *auxb[ADAPTOPT_MAX_NBUF] = {0};
        size_t es[ADAPTOPT_MAX_NBUF];
        for (int k = 0; k < nb; k++) {  /* p, g float32; m signed, v (and max v) unsigned */
            st.storage[k] = (unsigned char)(k < 2 ? ADAPTOPT_STORE_COMPUTE
                : k == 2 ? ADAPTOPT_STORE_Q8_SIGNED : ADAPTOPT_STORE_Q8_UNSIGNED);
            st.stochastic[k] = (unsigned char)(k >= 2 && sr);
            es[k] = k < 2 ? 4 : 1;
            a[k] = alloc(n * es[k] + 64);
            b[k] = alloc(n * es[k] + 64);
            for (size_t j = 0; j < n; j++) {
                if (k < 2) ((float *)a[k])[j] = (float)value(0);
                else ((uint8_t *)a[k])[j] = (uint8_t)rnd();
            }
            memcpy(b[k], a[k], n * es[k]);
            if (k >= 2) {
                auxa[k] = alloc(4 * nblk);
                auxb[k] = alloc(4 * nblk);
                for (size_t i = 0; i < nblk; i++)
                    ((float *)auxa[k])[i] = ((float *)auxb[k])[i] = (float)(0.25 + 0.5 * i);
            }
        }
        float u[ADAPTOPT_MAX_NSCAL];
        for (int k = 0; k < ADAPTOPT_MAX_NSCAL; k++) u[k] = (float)scalars[0][k];
        adaptopt_table_scalar.staged[0](adaptopt_table_scalar.step[ADAPTOPT_ADAM][0],
                                        (void *const *)a, auxa, (size_t)nb, 0, n, u, flags, &st,
                                        3, NULL);
        adaptopt_table_avx512.staged[0](adaptopt_table_avx512.step[ADAPTOPT_ADAM][0],
                                        (void *const *)b, auxb, (size_t)nb, 0, n, u, flags, &st,
                                        3, NULL);
        for (int k = 0; k < nb; k++) {
            checked++;
            if (memcmp(a[k], b[k], n * es[k])
                || (k >= 2 && memcmp(auxa[k], auxb[k], 4 * nblk))) {
                if (bad < 20) {
                    puts_("MISMATCH staged q8 stochastic "); putn(sr); puts_(" flags ");
                    putn(flags); puts_(" n "); putn((long)n); puts_(" buffer "); putn(k);
                    puts_("\n");
                }
                bad++;
            }
        }
        used = mark;
    }
    /* the row updates' loops (rows.c.inc): sum of 3 gradient rows, scale, drift */
    for (int dt = 0; dt < 2; dt++)
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si], es = dt ? 8 : 4, mark = used;
        void *a[3], *b[3], *g = alloc(3 * (n + 16) * es);
        static const int64_t order[3] = {2, 0, 1};
        for (size_t j = 0; j < 3 * (n + 16); j++) {
            double v = value(0);
            if (dt) ((double *)g)[j] = v; else ((float *)g)[j] = (float)v;
        }
        for (int k = 0; k < 3; k++) {
            a[k] = alloc((n + 16) * es);
            b[k] = alloc((n + 16) * es);
            for (size_t j = 0; j < n + 16; j++) {
                double v = value(0);
                if (dt) ((double *)a[k])[j] = v; else ((float *)a[k])[j] = (float)v;
            }
            memcpy(b[k], a[k], (n + 16) * es);
        }
        adaptopt_table_scalar.rows[dt].sum(a[0], g, order, 3, n + 16);
        adaptopt_table_avx512.rows[dt].sum(b[0], g, order, 3, n + 16);
        adaptopt_table_scalar.rows[dt].scale(a[1], n, 0.9);
        adaptopt_table_avx512.rows[dt].scale(b[1], n, 0.9);
        adaptopt_table_scalar.rows[dt].drift(a[2], a[1], n, -0.37);
        adaptopt_table_avx512.rows[dt].drift(b[2], b[1], n, -0.37);
        for (int k = 0; k < 3; k++) {
            checked++;
            if (memcmp(a[k], b[k], (n + 16) * es)) {
                if (bad < 20) {
                    puts_("MISMATCH rows loop "); putn(k); puts_(" dtype "); putn(dt);
                    puts_(" n "); putn((long)n); puts_("\n");
                }
                bad++;
            }
        }
        used = mark;
    }
    /* the gradient norm's block sums (gradnorm.c.inc), with inf and NaN blocks */
    for (int ty = ADAPTOPT_STORE_F32; ty <= ADAPTOPT_STORE_F16; ty++)
    for (int variant = 0; variant < 3; variant++)
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si], es = 8, mark = used;
        void *x = alloc((n + 1) * es);
        for (size_t j = 0; j < n; j++) {
            double v = value(0);
            if (variant == 1 && j == n / 2) v = 1.0 / 0.0;
            if (variant == 2 && j == n - 1) v = 0.0 / 0.0;
            if (ty == ADAPTOPT_STORE_F64) ((double *)x)[j] = v;
            else if (ty == ADAPTOPT_STORE_F32) ((float *)x)[j] = (float)v;
            else if (ty == ADAPTOPT_STORE_BF16) ((uint16_t *)x)[j] = adaptopt_f32_to_bf16((float)v);
            else ((uint16_t *)x)[j] = adaptopt_f32_to_f16((float)v);
        }
        int ba = 0, bb = 0;
        double sa = adaptopt_table_scalar.sumsq[ty](x, n, &ba);
        double sb = adaptopt_table_avx512.sumsq[ty](x, n, &bb);
        checked++;
        if (memcmp(&sa, &sb, sizeof sa) || ba != bb) {
            if (sa == sa || sb == sb || ba != bb) {  /* NaN payloads may differ */
                puts_("MISMATCH sumsq type "); putn(ty); puts_(" n "); putn((long)n); puts_("\n");
                bad++;
            }
        }
        used = mark;
    }
    puts_("bm: "); putn(checked); puts_(" buffers compared, "); putn(bad); puts_(" mismatches\n");
    puts_(bad ? "AVX512-FAIL\n" : "AVX512-PASS\n");
    while (!(inb(0x3FD) & 0x40)) {}  /* the transmitter has sent everything */
    /* bochs: power off through its shutdown port */
    const char *sd = "Shutdown";
    while (*sd) outb(0x8900, (unsigned char)*sd++);
}
