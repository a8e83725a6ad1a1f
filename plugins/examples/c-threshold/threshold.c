/*
 * c-threshold: an example lifeline plugin in C.
 *
 * Kind `threshold`: reads a number from a file (the first token of its first line,
 * e.g. /proc/loadavg or a value another program writes) and compares it with
 * thresholds from the check's config:
 *
 *   [[checks]]
 *   name = "load"
 *   kind = "plugin"
 *   plugin = "c_threshold"
 *   config = { file = "/proc/loadavg", warn = 4.0, crit = 8.0 }
 *
 * Healthy at or below `warn`, degraded above it, unhealthy above `crit`, unknown when
 * the file cannot be read. The value is reported as perfdata `value`.
 *
 * Build:
 *   cc -std=c11 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden \
 *      -I plugins -o plugins/lib/libc_threshold.so plugins/examples/c-threshold/threshold.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifeline_plugin.h"

typedef struct threshold {
  char file[4096];
  double warn;
  double crit;
} threshold;

static lifeline_str str_of(const char *s) {
  lifeline_str r = {(const uint8_t *)s, strlen(s)};
  return r;
}

static void say(const lifeline_host *host, const char *s) {
  host->set_message(host->ctx, str_of(s));
}

/* Finds `"key"` in a flat JSON object and returns a pointer just after its ':'.
 * Good enough for the flat objects lifeline passes (serde_json, no spaces). */
static const char *find_key(const char *json, size_t len, const char *key) {
  char pat[64];
  int n = snprintf(pat, sizeof pat, "\"%s\"", key);
  if (n < 0 || (size_t)n >= sizeof pat) return NULL;
  for (size_t i = 0; i + (size_t)n <= len; i++) {
    if (memcmp(json + i, pat, (size_t)n) == 0) {
      const char *p = json + i + n;
      const char *end = json + len;
      while (p < end && (*p == ' ' || *p == '\t')) p++;
      if (p < end && *p == ':') return p + 1;
    }
  }
  return NULL;
}

static int read_number(const char *json, size_t len, const char *key, double *out) {
  const char *p = find_key(json, len, key);
  if (!p) return 0;
  char buf[64];
  size_t k = 0;
  const char *end = json + len;
  while (p < end && *p == ' ') p++;
  while (p < end && k + 1 < sizeof buf && strchr("+-0123456789.eE", *p)) buf[k++] = *p++;
  buf[k] = '\0';
  char *stop = NULL;
  errno = 0;
  *out = strtod(buf, &stop);
  return k > 0 && stop && *stop == '\0' && errno == 0;
}

static int read_string(const char *json, size_t len, const char *key, char *out, size_t cap) {
  const char *p = find_key(json, len, key);
  const char *end = json + len;
  if (!p) return 0;
  while (p < end && *p == ' ') p++;
  if (p >= end || *p != '"') return 0;
  p++;
  size_t k = 0;
  while (p < end && *p != '"') {
    if (*p == '\\' && p + 1 < end) p++;
    if (k + 1 >= cap) return 0;
    out[k++] = *p++;
  }
  out[k] = '\0';
  return p < end;
}

static int32_t create(const lifeline_host *host, lifeline_str kind, lifeline_str config,
                      void **out) {
  (void)kind;
  threshold *t = calloc(1, sizeof *t);
  if (!t) {
    say(host, "out of memory");
    return 1;
  }
  const char *json = (const char *)config.ptr;
  if (!read_string(json, config.len, "file", t->file, sizeof t->file)) {
    say(host, "config needs `file` (a path)");
    free(t);
    return 1;
  }
  if (!read_number(json, config.len, "warn", &t->warn) ||
      !read_number(json, config.len, "crit", &t->crit)) {
    say(host, "config needs numbers `warn` and `crit`");
    free(t);
    return 1;
  }
  if (t->warn > t->crit) {
    say(host, "`warn` must not be above `crit`");
    free(t);
    return 1;
  }
  *out = t;
  return 0;
}

static int32_t check(void *instance, const lifeline_host *host, lifeline_str state) {
  (void)state;
  threshold *t = instance;
  char msg[4096 + 256];
  FILE *f = fopen(t->file, "r");
  if (!f) {
    snprintf(msg, sizeof msg, "cannot read %s: %s", t->file, strerror(errno));
    say(host, msg);
    return LIFELINE_UNKNOWN;
  }
  double v = 0;
  int ok = fscanf(f, "%lf", &v) == 1;
  fclose(f);
  if (!ok) {
    snprintf(msg, sizeof msg, "%s does not start with a number", t->file);
    say(host, msg);
    return LIFELINE_UNKNOWN;
  }
  host->add_perfdata(host->ctx, str_of("value"), v);
  int32_t status = LIFELINE_OK;
  const char *word = "OK";
  if (v > t->crit) {
    status = LIFELINE_CRITICAL;
    word = "CRITICAL";
  } else if (v > t->warn) {
    status = LIFELINE_WARNING;
    word = "WARNING";
  }
  snprintf(msg, sizeof msg, "%s: value %g (warn %g, crit %g)", word, v, t->warn, t->crit);
  say(host, msg);
  return status;
}

static void destroy(void *instance) { free(instance); }

static const char *const KINDS[] = {"threshold", NULL};

static const lifeline_plugin_v1 TABLE = {
    LIFELINE_ABI_MAJOR, LIFELINE_ABI_MINOR, sizeof(lifeline_plugin_v1), 0,
    "c_threshold",      "0.1.0",            KINDS,
    create,             check,              destroy,
};

LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void) { return &TABLE; }
