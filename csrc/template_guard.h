/* Included first by every kernel body: a body is instantiated only through
 * kernels.c.inc, which defines its arithmetic type TYPE (its buffers hold
 * TYPE; other storage is staging.c.inc's), its name suffix and SQRT. */
#if !defined(TYPE) || !defined(SFX) || !defined(SQRT)
#error "a kernel body needs TYPE, SFX and SQRT: include it through kernels.c.inc"
#endif
#define KNAME(name) ADAPTOPT_CAT(name, ADAPTOPT_CAT(_, SFX))
#define BUF(k) ((TYPE *)b[k] + off)
