/* Test fixture: a table that claims the Rust SDK but not panic = "unwind". */
#include "lifeline_plugin.h"
static int32_t create(const lifeline_host *h, lifeline_str k, lifeline_str c, void **o) {
  (void)h; (void)k; (void)c; (void)o;
  return 1;
}
static int32_t check(void *i, const lifeline_host *h, lifeline_str s) {
  (void)i; (void)h; (void)s;
  return 0;
}
static void destroy(void *i) { (void)i; }
static const char *const KINDS[] = {"x", NULL};
static const lifeline_plugin_v1 TABLE = {LIFELINE_ABI_MAJOR, 0u, sizeof(lifeline_plugin_v1), LIFELINE_FLAG_RUST_SDK, "abort_build", "0.0.1", KINDS, create, check, destroy};
LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void) { return &TABLE; }
