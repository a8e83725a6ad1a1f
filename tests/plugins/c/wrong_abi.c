/* Test fixture: exports the v1 symbol but claims ABI major 2. */
#include "stub_fns.h"
static const lifeline_plugin_v1 TABLE = {2u, 0u, sizeof(lifeline_plugin_v1), 0, "wrong_abi", "0.0.1", KINDS, create, check, destroy};
LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void) { return &TABLE; }
