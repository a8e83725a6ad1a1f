/*
 * lifeline_plugin.h -- the C ABI of lifeline check plugins. ABI major 1.
 *
 * A plugin is a shared library exporting exactly one symbol,
 * `lifeline_plugin_entry_v1`, which returns a pointer to a static
 * `lifeline_plugin_v1` table. The host checks `abi_major` and `struct_size`
 * before it reads or calls anything else.
 *
 * Rules (see plugins/README.md for the long form):
 *  - Strings passed IN (kind, config, state) are borrowed, UTF-8, NOT
 *    NUL-terminated, and valid only during the call that passed them.
 *  - Results go OUT through host callbacks, which copy: no memory changes owner,
 *    so the plugin never frees host memory and the host never frees plugin memory.
 *  - `name`, `version` and `kinds` are static storage: the host never unloads
 *    a library.
 *  - The host never runs two check() calls on one instance at once (unless
 *    LIFELINE_FLAG_THREAD_SAFE), never calls destroy() while a check() on that
 *    instance runs, and may call any function from any thread.
 *  - A check() that runs past the deadline is reported as `timeout`; the
 *    instance is not called again until that call returns. Check
 *    host->is_cancelled() in loops and give every blocking call a timeout no
 *    longer than the time left to `deadline_unix_ms`.
 *  - Never let a C++ exception or a longjmp cross into the host.
 */
#ifndef LIFELINE_PLUGIN_H
#define LIFELINE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LIFELINE_EXPORT __attribute__((visibility("default")))
#else
#define LIFELINE_EXPORT
#endif

#define LIFELINE_ABI_MAJOR 1u
#define LIFELINE_ABI_MINOR 0u

/* check() may run concurrently on one instance. */
#define LIFELINE_FLAG_THREAD_SAFE (1u << 0)
/* Set by the Rust SDK iff the plugin was built with panic = "unwind". */
#define LIFELINE_FLAG_PANIC_UNWIND (1u << 1)
/* Pass the JSON snapshot of every check's state to check() (custom rules). */
#define LIFELINE_FLAG_WANTS_STATE (1u << 2)
/* Set by the Rust SDK: the host refuses it without LIFELINE_FLAG_PANIC_UNWIND. */
#define LIFELINE_FLAG_RUST_SDK (1u << 3)

/* Borrowed UTF-8, NOT NUL-terminated, valid only during the call that passed it. */
typedef struct lifeline_str {
  const uint8_t *ptr;
  size_t len;
} lifeline_str;

/* What check() returns. 0..3 follow the Nagios numbering, like the `exec` kind:
 * healthy, degraded, unhealthy (error_kind "rejected"), unknown.
 * LIFELINE_ERROR means the plugin itself failed (error_kind "plugin"). */
typedef enum lifeline_status {
  LIFELINE_OK = 0,
  LIFELINE_WARNING = 1,
  LIFELINE_CRITICAL = 2,
  LIFELINE_UNKNOWN = 3,
  LIFELINE_ERROR = 4
} lifeline_status;

/* Log levels for host->log. */
#define LIFELINE_LOG_ERROR 1u
#define LIFELINE_LOG_WARN 2u
#define LIFELINE_LOG_INFO 3u
#define LIFELINE_LOG_DEBUG 4u
#define LIFELINE_LOG_TRACE 5u

/* Host services, valid only during the call they were passed to. Every callback
 * is thread-safe and COPIES what it is given. */
typedef struct lifeline_host {
  uint32_t struct_size;                                          /* host's sizeof(lifeline_host) */
  void *ctx;                                                     /* pass back unchanged */
  void (*set_message)(void *ctx, lifeline_str msg);              /* summary text, last wins */
  void (*set_latency)(void *ctx, double seconds);                /* else host wall time is used */
  void (*add_perfdata)(void *ctx, lifeline_str label, double v); /* lifeline_check_perfdata */
  void (*log)(void *ctx, uint32_t level, lifeline_str msg);      /* LIFELINE_LOG_* */
  int (*is_cancelled)(void *ctx);                                /* non-zero: stop now */
  uint64_t deadline_unix_ms;                                     /* absolute deadline */
} lifeline_host;

typedef struct lifeline_plugin_v1 {
  uint32_t abi_major;       /* == LIFELINE_ABI_MAJOR, checked first */
  uint32_t abi_minor;       /* fields are only ever appended */
  uint32_t struct_size;     /* plugin's sizeof(lifeline_plugin_v1) */
  uint32_t flags;           /* LIFELINE_FLAG_* */
  const char *name;         /* static, NUL-terminated, [a-z0-9_]+ */
  const char *version;      /* static, NUL-terminated semver */
  const char *const *kinds; /* static, NULL-terminated list of kinds it implements */
  /* config_json = the check's `config` table as JSON ("{}" when absent).
   * Returns 0 and sets *out_instance on success; non-zero = refused (explain
   * via host->set_message). May be called once at config load only to validate,
   * with destroy() right after: keep it cheap and free of side effects. */
  int32_t (*create)(const lifeline_host *host, lifeline_str kind, lifeline_str config_json,
                    void **out_instance);
  /* One attempt; returns a lifeline_status. state_json is empty unless WANTS_STATE. */
  int32_t (*check)(void *instance, const lifeline_host *host, lifeline_str state_json);
  /* Never called while a check() on this instance is running. */
  void (*destroy)(void *instance);
} lifeline_plugin_v1;

/* The only exported symbol; the major version is part of its name. */
LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void);

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(lifeline_str) == 16, "lifeline_str layout");
_Static_assert(sizeof(lifeline_host) == 64, "lifeline_host layout");
_Static_assert(sizeof(lifeline_plugin_v1) == 64, "lifeline_plugin_v1 layout");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LIFELINE_PLUGIN_H */
