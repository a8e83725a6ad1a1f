//! The only `unsafe` code in the agent: the C ABI of `plugins/lifeline_plugin.h`.
//!
//! Everything that crosses the boundary goes through this module: opening a library
//! (`RTLD_NOW | RTLD_LOCAL`, never closed), reading and checking its table, calling
//! `create`/`check`/`destroy`, and the host callbacks, which copy what they are given so
//! no memory changes owner. The rest of the agent sees only safe types: [`Table`],
//! [`Instance`] and [`CallCtx`].
//!
//! The invariants that make the calls sound, and that the safe wrappers enforce:
//! * the library is leaked, so every pointer into it (functions, static strings) is valid
//!   for the life of the process;
//! * the table is validated (ABI major, `struct_size`, non-null functions and strings)
//!   before any field beyond the first three is read or any function called;
//! * an [`Instance`] is owned by exactly one thread and `check` takes `&mut self`, so one
//!   instance never runs two calls at once, and `destroy` (in `Drop`) never runs while a
//!   `check` does;
//! * the `lifeline_host` and its context outlive the call they are passed to.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use parking_lot::Mutex;

/// The ABI major version this host speaks.
pub const ABI_MAJOR: u32 = 1;
/// The newest ABI minor version this host knows.
pub const ABI_MINOR: u32 = 0;
/// `check` may run concurrently on one instance.
pub const FLAG_THREAD_SAFE: u32 = 1 << 0;
/// Built with `panic = "unwind"`.
pub const FLAG_PANIC_UNWIND: u32 = 1 << 1;
/// Wants the state snapshot.
pub const FLAG_WANTS_STATE: u32 = 1 << 2;
/// Built with the Rust SDK.
pub const FLAG_RUST_SDK: u32 = 1 << 3;

const ENTRY_V1: &str = "lifeline_plugin_entry_v1";
const ENTRY_V2: &str = "lifeline_plugin_entry_v2";
/// Longest text a callback copies (longer is cut).
const MAX_TEXT: usize = 16 * 1024;
/// Most perfdata values kept from one call (a memory bound; the metrics keep at most
/// `metrics::series::PERFDATA_CAP` per check and count the rest as dropped).
pub const MAX_PERFDATA: usize = 1024;
/// Most kinds read from a table.
const MAX_KINDS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawStr {
    ptr: *const u8,
    len: usize,
}

impl RawStr {
    fn of(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Copies at most [`MAX_TEXT`] bytes (lossy UTF-8).
    ///
    /// # Safety
    /// `ptr` must be null or point to `len` readable bytes.
    unsafe fn copy(self) -> String {
        if self.ptr.is_null() || self.len == 0 {
            return String::new();
        }
        let n = self.len.min(MAX_TEXT);
        // SAFETY: the caller guarantees `len` readable bytes at `ptr`; we read n <= len.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, n) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

#[repr(C)]
struct RawHost {
    struct_size: u32,
    ctx: *mut c_void,
    set_message: Option<extern "C" fn(*mut c_void, RawStr)>,
    set_latency: Option<extern "C" fn(*mut c_void, f64)>,
    add_perfdata: Option<extern "C" fn(*mut c_void, RawStr, f64)>,
    log: Option<extern "C" fn(*mut c_void, u32, RawStr)>,
    is_cancelled: Option<extern "C" fn(*mut c_void) -> c_int>,
    deadline_unix_ms: u64,
}

type CreateFn = unsafe extern "C" fn(*const RawHost, RawStr, RawStr, *mut *mut c_void) -> i32;
type CheckFn = unsafe extern "C" fn(*mut c_void, *const RawHost, RawStr) -> i32;
type DestroyFn = unsafe extern "C" fn(*mut c_void);
type EntryFn = unsafe extern "C" fn() -> *const RawTable;

/// The first three fields, which every ABI version keeps.
#[repr(C)]
struct RawHeader {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
}

#[repr(C)]
struct RawTable {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
    flags: u32,
    name: *const c_char,
    version: *const c_char,
    kinds: *const *const c_char,
    create: Option<CreateFn>,
    check: Option<CheckFn>,
    destroy: Option<DestroyFn>,
}

// SAFETY: a validated table is static, immutable data of a never-unloaded library: its
// pointers are only read, and its functions may be called from any thread (ABI contract).
unsafe impl Sync for RawTable {}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<RawStr>() == 16);
    assert!(size_of::<RawHost>() == 64);
    assert!(size_of::<RawTable>() == 64);
};

/// Why a library was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `dlopen` failed (missing file, not an ELF object, unresolved symbol, …).
    Open(String),
    /// No `lifeline_plugin_entry_v1` symbol.
    NotAPlugin(String),
    /// The table is unusable (wrong ABI, too short, null fields, bad names).
    BadTable(String),
}

/// A validated plugin table, valid for the life of the process.
pub struct Table {
    raw: &'static RawTable,
    create: CreateFn,
    check: CheckFn,
    destroy: DestroyFn,
    /// `name`.
    pub name: String,
    /// `version`.
    pub version: String,
    /// `abi_major`.
    pub abi_major: u32,
    /// `abi_minor`.
    pub abi_minor: u32,
    /// `flags`.
    pub flags: u32,
    /// `kinds`.
    pub kinds: Vec<String>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("version", &self.version)
            .field(
                "abi",
                &format_args!("{}.{}", self.abi_major, self.abi_minor),
            )
            .field("flags", &self.flags)
            .field("kinds", &self.kinds)
            .finish()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Reads a static C string of the plugin (bounded by the plugin's own NUL).
///
/// # Safety
/// `p` must be null or a NUL-terminated string valid forever (the library is leaked).
unsafe fn static_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated static storage of a never-unloaded library.
    let s = unsafe { CStr::from_ptr(p) };
    Some(s.to_string_lossy().into_owned())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Opens `path` and validates its table. The library is never closed, even when refused
/// (its initialisers already ran; unloading is what is unsafe).
pub fn open(path: &Path) -> Result<Table, Refusal> {
    // SAFETY: loading runs the library's initialisers with the agent's privileges; the
    // loader only opens files that passed the ownership/permission checks in
    // `plugin::load`, and the operator chose the file. RTLD_NOW makes unresolved symbols
    // fail here instead of at a later call.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| Refusal::Open(error_chain(&e)))?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol, if present, is declared by the header as
    // `const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void)`.
    let entry = match unsafe { lib.get::<EntryFn>(ENTRY_V1) } {
        Ok(sym) => *sym,
        Err(e) => {
            // SAFETY: only the address is looked up, nothing is called or read.
            let newer = unsafe { lib.get::<*const c_void>(ENTRY_V2) }.is_ok();
            return Err(if newer {
                Refusal::BadTable(format!(
                    "built for plugin ABI 2 (exports {ENTRY_V2}); this lifeline speaks ABI {ABI_MAJOR}"
                ))
            } else {
                Refusal::NotAPlugin(format!(
                    "not a lifeline plugin: no `{ENTRY_V1}` symbol ({})",
                    error_chain(&e)
                ))
            });
        }
    };
    // SAFETY: the entry point takes no arguments and returns a pointer to static data; the
    // library is leaked so the pointer stays valid.
    let p = unsafe { entry() };
    if p.is_null() {
        return Err(Refusal::BadTable(format!("{ENTRY_V1}() returned NULL")));
    }
    if !(p as usize).is_multiple_of(align_of::<RawTable>()) {
        return Err(Refusal::BadTable("the plugin table is misaligned".into()));
    }
    // SAFETY: every ABI version starts with these three u32 fields, so reading the header
    // is valid for any version's table; nothing else is read before the checks below.
    let head = unsafe { &*p.cast::<RawHeader>() };
    if head.abi_major != ABI_MAJOR {
        return Err(Refusal::BadTable(format!(
            "plugin ABI {}.{} is not supported; this lifeline speaks ABI {ABI_MAJOR}.x",
            head.abi_major, head.abi_minor
        )));
    }
    let need = size_of::<RawTable>();
    if (head.struct_size as usize) < need {
        return Err(Refusal::BadTable(format!(
            "plugin table is {} bytes, ABI {ABI_MAJOR} needs at least {need}",
            head.struct_size
        )));
    }
    // SAFETY: ABI major matches and the plugin declares at least `size_of::<RawTable>()`
    // bytes of static table, whose layout the header fixes.
    let raw: &'static RawTable = unsafe { &*p };
    let (Some(create), Some(check), Some(destroy)) = (raw.create, raw.check, raw.destroy) else {
        return Err(Refusal::BadTable("create, check or destroy is NULL".into()));
    };
    // SAFETY: name and version are static NUL-terminated strings (header contract).
    let name =
        unsafe { static_str(raw.name) }.ok_or_else(|| Refusal::BadTable("name is NULL".into()))?;
    if !valid_name(&name) {
        return Err(Refusal::BadTable(format!(
            "plugin name `{name}` is not [a-z0-9_]+"
        )));
    }
    // SAFETY: as above.
    let version = unsafe { static_str(raw.version) }
        .ok_or_else(|| Refusal::BadTable("version is NULL".into()))?;
    if raw.kinds.is_null() {
        return Err(Refusal::BadTable("kinds is NULL".into()));
    }
    let mut kinds = Vec::new();
    for i in 0..=MAX_KINDS {
        // SAFETY: `kinds` is a NULL-terminated static array; we stop at the NULL (or after
        // MAX_KINDS entries, refusing the table).
        let k = unsafe { *raw.kinds.add(i) };
        if k.is_null() {
            break;
        }
        if i == MAX_KINDS {
            return Err(Refusal::BadTable(format!(
                "more than {MAX_KINDS} kinds (missing NULL terminator?)"
            )));
        }
        // SAFETY: a non-null entry is a static NUL-terminated string.
        let k = unsafe { static_str(k) }.unwrap_or_default();
        if !valid_name(&k) {
            return Err(Refusal::BadTable(format!("kind `{k}` is not [a-z0-9_]+")));
        }
        kinds.push(k);
    }
    if kinds.is_empty() {
        return Err(Refusal::BadTable("the plugin implements no kinds".into()));
    }
    if raw.flags & FLAG_RUST_SDK != 0 && raw.flags & FLAG_PANIC_UNWIND == 0 {
        return Err(Refusal::BadTable(
            "built with panic = \"abort\": one panic would abort the agent; rebuild with panic = \"unwind\"".into(),
        ));
    }
    Ok(Table {
        raw,
        create,
        check,
        destroy,
        name,
        version,
        abi_major: head.abi_major,
        abi_minor: head.abi_minor,
        flags: raw.flags,
        kinds,
    })
}

/// What the plugin reported through the callbacks during one call.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// Last `set_message`.
    pub message: Option<String>,
    /// Last `set_latency` (seconds).
    pub latency: Option<f64>,
    /// `add_perfdata` values (at most [`MAX_PERFDATA`]).
    pub perfdata: Vec<(String, f64)>,
}

/// The context of one call: what the callbacks write, and the cancel flag.
pub struct CallCtx {
    /// Set when the host gave up on the call.
    pub cancelled: AtomicBool,
    /// Results.
    pub collected: Mutex<Collected>,
    /// For log lines.
    pub check: Arc<str>,
    /// Absolute deadline (unix ms).
    pub deadline_unix_ms: u64,
}

impl CallCtx {
    /// A fresh context.
    pub fn new(check: Arc<str>, deadline_unix_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            cancelled: AtomicBool::new(false),
            collected: Mutex::new(Collected::default()),
            check,
            deadline_unix_ms,
        })
    }

    fn host(self: &Arc<Self>) -> RawHost {
        RawHost {
            struct_size: size_of::<RawHost>() as u32,
            ctx: Arc::as_ptr(self).cast_mut().cast(),
            set_message: Some(cb_set_message),
            set_latency: Some(cb_set_latency),
            add_perfdata: Some(cb_add_perfdata),
            log: Some(cb_log),
            is_cancelled: Some(cb_is_cancelled),
            deadline_unix_ms: self.deadline_unix_ms,
        }
    }
}

/// # Safety
/// `ctx` must be the pointer [`CallCtx::host`] put in the host struct, during the call.
unsafe fn ctx_ref<'a>(ctx: *mut c_void) -> Option<&'a CallCtx> {
    // SAFETY: the host struct carries `Arc::as_ptr` of a CallCtx that the calling thread
    // keeps alive until the plugin call returns; callbacks are only valid during the call.
    unsafe { ctx.cast::<CallCtx>().as_ref() }
}

extern "C" fn cb_set_message(ctx: *mut c_void, msg: RawStr) {
    // SAFETY: callback contract (valid ctx and string during the call).
    let (Some(c), text) = (unsafe { ctx_ref(ctx) }, unsafe { msg.copy() }) else {
        return;
    };
    c.collected.lock().message = Some(text);
}

extern "C" fn cb_set_latency(ctx: *mut c_void, seconds: f64) {
    // SAFETY: callback contract.
    if let Some(c) = unsafe { ctx_ref(ctx) }
        && seconds.is_finite()
        && seconds >= 0.0
    {
        c.collected.lock().latency = Some(seconds);
    }
}

extern "C" fn cb_add_perfdata(ctx: *mut c_void, label: RawStr, value: f64) {
    // SAFETY: callback contract.
    let (Some(c), label) = (unsafe { ctx_ref(ctx) }, unsafe { label.copy() }) else {
        return;
    };
    let mut g = c.collected.lock();
    if value.is_finite()
        && !label.is_empty()
        && label.len() <= 128
        && g.perfdata.len() < MAX_PERFDATA
    {
        g.perfdata.push((label, value));
    }
}

extern "C" fn cb_log(ctx: *mut c_void, level: u32, msg: RawStr) {
    // SAFETY: callback contract.
    let (Some(c), msg) = (unsafe { ctx_ref(ctx) }, unsafe { msg.copy() }) else {
        return;
    };
    let msg = crate::secret::redact(&msg);
    match level {
        0 | 1 => tracing::error!(check = %c.check, "plugin: {msg}"),
        2 => tracing::warn!(check = %c.check, "plugin: {msg}"),
        3 => tracing::info!(check = %c.check, "plugin: {msg}"),
        4 => tracing::debug!(check = %c.check, "plugin: {msg}"),
        _ => tracing::trace!(check = %c.check, "plugin: {msg}"),
    }
}

extern "C" fn cb_is_cancelled(ctx: *mut c_void) -> c_int {
    // SAFETY: callback contract.
    match unsafe { ctx_ref(ctx) } {
        Some(c) => c_int::from(c.cancelled.load(Ordering::Relaxed)),
        None => 1,
    }
}

/// One host callback, as a plugin makes it (for the fuzz targets and tests).
#[derive(Debug, Clone, Copy)]
pub enum HostCall<'a> {
    /// `set_message(text)`.
    Message(&'a [u8]),
    /// `set_latency(seconds)`.
    Latency(f64),
    /// `add_perfdata(label, value)`.
    Perfdata(&'a [u8], f64),
    /// `log(level, text)`.
    Log(u32, &'a [u8]),
    /// `is_cancelled()`; returns its answer.
    IsCancelled,
}

impl CallCtx {
    /// Makes `call` through the host table a plugin receives for this context (the same
    /// function pointers, the same context pointer); returns `is_cancelled`'s answer, 0
    /// for the others.
    pub fn call_host(self: &Arc<Self>, call: HostCall<'_>) -> i32 {
        let host = self.host();
        let raw = |b: &[u8]| RawStr {
            ptr: b.as_ptr(),
            len: b.len(),
        };
        let missing = "host table callback";
        match call {
            HostCall::Message(m) => host.set_message.expect(missing)(host.ctx, raw(m)),
            HostCall::Latency(s) => host.set_latency.expect(missing)(host.ctx, s),
            HostCall::Perfdata(l, v) => host.add_perfdata.expect(missing)(host.ctx, raw(l), v),
            HostCall::Log(level, m) => host.log.expect(missing)(host.ctx, level, raw(m)),
            HostCall::IsCancelled => return host.is_cancelled.expect(missing)(host.ctx),
        }
        0
    }
}

/// Why a plugin's `create` gave no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// `create` returned non-zero; the plugin's own explanation, or the code.
    #[error("{0}")]
    Refused(String),
    /// `create` returned 0 but left the instance pointer null.
    #[error("create succeeded but returned no instance")]
    NoInstance,
    /// `create` did not return within the validation timeout (it keeps running on its own
    /// thread; the config is refused).
    #[error("create did not return within {}", crate::time::fmt_duration(*.0))]
    TimedOut(std::time::Duration),
    /// An earlier `create` of this plugin during validation has not returned yet.
    #[error("an earlier create of this plugin (during config validation) has not returned yet")]
    StillRunning,
    /// The validation thread could not be started.
    #[error("cannot start a thread for create: {0}")]
    Thread(String),
}

impl Table {
    /// Creates an instance of `kind`; `Err` carries the plugin's explanation.
    pub fn create(
        &'static self,
        kind: &str,
        config_json: &str,
        ctx: &Arc<CallCtx>,
    ) -> Result<Instance, CreateError> {
        let host = ctx.host();
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table was validated; `host` and the borrowed strings outlive the
        // call; `out` is a valid place for the instance pointer.
        let rc =
            unsafe { (self.create)(&host, RawStr::of(kind), RawStr::of(config_json), &mut out) };
        if rc != 0 {
            let msg = ctx.collected.lock().message.take();
            return Err(CreateError::Refused(
                msg.unwrap_or_else(|| format!("create returned {rc}")),
            ));
        }
        if out.is_null() {
            return Err(CreateError::NoInstance);
        }
        Ok(Instance {
            table: self,
            ptr: out,
        })
    }

    /// The raw flags word (for `inspect`).
    pub fn raw_flags(&self) -> u32 {
        self.raw.flags
    }
}

/// A plugin instance. Owned by one thread; dropped with the plugin's `destroy`.
pub struct Instance {
    table: &'static Table,
    ptr: *mut c_void,
}

// SAFETY: the ABI allows create/check/destroy on any thread ("no thread affinity"); the
// instance is only ever used by its owner, one call at a time (`&mut self`).
unsafe impl Send for Instance {}

impl Instance {
    /// One `check` call; returns the plugin's status code.
    pub fn check(&mut self, state_json: &str, ctx: &Arc<CallCtx>) -> i32 {
        let host = ctx.host();
        // SAFETY: `ptr` came from this table's `create`; `&mut self` guarantees no other
        // call on this instance; `host` (and the CallCtx it points to) and `state_json`
        // outlive the call.
        unsafe { (self.table.check)(self.ptr, &host, RawStr::of(state_json)) }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `create`; Drop runs once, and never during a `check`
        // because `check` borrows the instance mutably.
        unsafe { (self.table.destroy)(self.ptr) }
    }
}
