/* Included first by every kernel body: a body is instantiated only through
 * kernels.c.inc, which defines its element type and name suffix. */
#if !defined(TYPE) || !defined(SFX) || !defined(SQRT)
#error "a kernel body needs TYPE, SFX and SQRT: include it through kernels.c.inc"
#endif
#define KNAME(name) ADAPTOPT_CAT(name, ADAPTOPT_CAT(_, SFX))
#define BUF(k) ((TYPE *)b[k] + off)
