/* The kernels compiled for the avx512 instruction set (see CMakeLists.txt
 * for its flags); dispatch.c picks a table at run time. */
#define ISA avx512
#include "kernels.c.inc"
