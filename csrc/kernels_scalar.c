/* The kernels compiled for the scalar instruction set (see CMakeLists.txt
 * for its flags); dispatch.c picks a table at run time. */
#define ISA scalar
#include "kernels.c.inc"
