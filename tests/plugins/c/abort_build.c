/* Test fixture: a table that claims the Rust SDK but not panic = "unwind". */
#include "stub_fns.h"
static const lifeline_plugin_v1 TABLE = {LIFELINE_ABI_MAJOR, 0u, sizeof(lifeline_plugin_v1), LIFELINE_FLAG_RUST_SDK, "abort_build", "0.0.1", KINDS, create, check, destroy};
LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void) { return &TABLE; }
