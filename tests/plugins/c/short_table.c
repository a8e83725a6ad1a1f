/* Test fixture: right ABI major, but a table shorter than ABI 1 requires. */
#include "lifeline_plugin.h"
typedef struct { uint32_t abi_major, abi_minor, struct_size, flags; } short_table;
static const short_table TABLE = {LIFELINE_ABI_MAJOR, 0u, sizeof(short_table), 0};
LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void) {
  return (const lifeline_plugin_v1 *)(const void *)&TABLE;
}
