/* Test fixture helper: a plugin's create (always fails), check and destroy that do
 * nothing, and KINDS = {"x"}, for the fixtures that only differ in their table. */
#ifndef LIFELINE_TEST_STUB_FNS_H
#define LIFELINE_TEST_STUB_FNS_H
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
#endif
