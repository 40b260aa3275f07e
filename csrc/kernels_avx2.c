/* The kernels compiled for the avx2 instruction set (see CMakeLists.txt
 * for its flags); dispatch.c picks a table at run time. */
#define ISA avx2
#include "kernels.c.inc"
