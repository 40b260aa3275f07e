/* Prints adaptopt_isa_supported() for every ISA of dispatch.c as built
 * (with the kernel tables stubbed: only the CPU detection runs). */
#include <stdio.h>
#include "internal.h"
const adaptopt_table adaptopt_table_scalar, adaptopt_table_avx2, adaptopt_table_avx512;
int main(void)
{
    for (int isa = 0; isa < ADAPTOPT_N_ISAS; isa++)
        printf("%s=%d\n", adaptopt_isa_name(isa), adaptopt_isa_supported(isa));
    return 0;
}
