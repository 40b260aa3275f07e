/* Included first by every kernel body: a body is instantiated only through
 * kernels.c.inc, which defines its arithmetic type TYPE, its name suffix,
 * and how its buffers are stored: STYPE in memory, LD(x) widens one stored
 * element to TYPE, ST(x) rounds a TYPE value to STYPE (STYPE = TYPE and
 * both the identity, except in the 16-bit bodies: staging.c.inc). */
#if !defined(TYPE) || !defined(SFX) || !defined(SQRT) || !defined(STYPE) || !defined(LD) \
    || !defined(ST)
#error "a kernel body needs TYPE, SFX, SQRT, STYPE, LD and ST: include it through kernels.c.inc"
#endif
#define KNAME(name) ADAPTOPT_CAT(name, ADAPTOPT_CAT(_, SFX))
#define BUF(k) ((STYPE *)b[k] + off)
