//! Write lifeline check plugins in Rust.
//!
//! Implement [`CheckPlugin`] for a type and export it with [`export_plugin!`] in a crate
//! built as a `cdylib`:
//!
//! ```
//! use lifeline_plugin_sdk::{CheckPlugin, Host, Status};
//!
//! struct Always;
//!
//! impl CheckPlugin for Always {
//!     const NAME: &'static core::ffi::CStr = c"always";
//!     const VERSION: &'static core::ffi::CStr = c"0.1.0";
//!     fn create(_kind: &str, _config_json: &str, _host: &Host<'_>) -> Result<Self, String> {
//!         Ok(Always)
//!     }
//!     fn check(&mut self, _state_json: &str, host: &Host<'_>) -> Result<Status, String> {
//!         host.set_message("fine");
//!         Ok(Status::Ok)
//!     }
//! }
//!
//! lifeline_plugin_sdk::export_plugin!(Always, kinds: ["always"]);
//! ```
//!
//! The macro emits the one exported symbol, `lifeline_plugin_entry_v1`, and wraps every
//! entry point in `catch_unwind`: a panic in `create` refuses the instance, a panic in
//! `check` becomes a failed result (`error_kind = "plugin"`) and the next call works, a
//! panic in `drop` is swallowed. A plugin built with `panic = "abort"` would take the
//! whole agent down on its first panic, so such a build fails to compile.
//!
//! The C view of the same contract is `plugins/lifeline_plugin.h`; the layouts below
//! mirror it and are pinned by `const` assertions.

#![allow(unsafe_code)]

#[cfg(not(panic = "unwind"))]
compile_error!(
    "lifeline plugins must be built with panic = \"unwind\": with panic = \"abort\" one \
     panic inside a plugin would abort the whole agent. Remove `panic = \"abort\"` from \
     the profile."
);

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// ABI major version: part of the entry symbol's name.
pub const ABI_MAJOR: u32 = 1;
/// ABI minor version: fields are only ever appended.
pub const ABI_MINOR: u32 = 0;
/// `check` may run concurrently on one instance.
pub const FLAG_THREAD_SAFE: u32 = 1 << 0;
/// Built with `panic = "unwind"` (the host refuses SDK plugins without it).
pub const FLAG_PANIC_UNWIND: u32 = 1 << 1;
/// Wants the JSON snapshot of every check's state.
pub const FLAG_WANTS_STATE: u32 = 1 << 2;
/// Built with this SDK.
pub const FLAG_RUST_SDK: u32 = 1 << 3;

/// `lifeline_str`: borrowed UTF-8, not NUL-terminated, valid during one call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LlStr {
    /// First byte (may be null when `len` is 0).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl LlStr {
    /// Borrows a Rust string for the duration of a call.
    pub fn borrow(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The text, if the pointer is valid UTF-8.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes for the lifetime `'a`, or be null.
    pub unsafe fn as_str<'a>(self) -> Option<&'a str> {
        if self.ptr.is_null() || self.len == 0 {
            return Some("");
        }
        // SAFETY: the caller guarantees `ptr..ptr+len` is readable for 'a.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        std::str::from_utf8(bytes).ok()
    }
}

/// `lifeline_host`: the host's callbacks, valid during one call.
#[repr(C)]
#[derive(Debug)]
pub struct LlHost {
    /// The host's `sizeof(lifeline_host)`.
    pub struct_size: u32,
    /// Passed back to every callback.
    pub ctx: *mut c_void,
    /// Sets the result's message (last wins).
    pub set_message: Option<extern "C" fn(*mut c_void, LlStr)>,
    /// Sets the measured latency in seconds.
    pub set_latency: Option<extern "C" fn(*mut c_void, f64)>,
    /// Adds a perfdata value.
    pub add_perfdata: Option<extern "C" fn(*mut c_void, LlStr, f64)>,
    /// Logs through the agent's logger.
    pub log: Option<extern "C" fn(*mut c_void, u32, LlStr)>,
    /// Non-zero once the host gave up on the call.
    pub is_cancelled: Option<extern "C" fn(*mut c_void) -> c_int>,
    /// Absolute deadline (unix milliseconds).
    pub deadline_unix_ms: u64,
}

/// `create` entry point.
pub type CreateFn = unsafe extern "C" fn(*const LlHost, LlStr, LlStr, *mut *mut c_void) -> i32;
/// `check` entry point.
pub type CheckFn = unsafe extern "C" fn(*mut c_void, *const LlHost, LlStr) -> i32;
/// `destroy` entry point.
pub type DestroyFn = unsafe extern "C" fn(*mut c_void);

/// `lifeline_plugin_v1`: the table the entry symbol returns.
#[repr(C)]
#[derive(Debug)]
pub struct LlPluginV1 {
    /// [`ABI_MAJOR`].
    pub abi_major: u32,
    /// [`ABI_MINOR`].
    pub abi_minor: u32,
    /// `size_of::<LlPluginV1>()`.
    pub struct_size: u32,
    /// `FLAG_*`.
    pub flags: u32,
    /// NUL-terminated `[a-z0-9_]+`.
    pub name: *const c_char,
    /// NUL-terminated semver.
    pub version: *const c_char,
    /// NULL-terminated list of NUL-terminated kind names.
    pub kinds: *const *const c_char,
    /// Creates an instance.
    pub create: Option<CreateFn>,
    /// Runs one check.
    pub check: Option<CheckFn>,
    /// Releases an instance.
    pub destroy: Option<DestroyFn>,
}

// SAFETY: the table only holds pointers to static, immutable data and functions.
unsafe impl Sync for LlPluginV1 {}

/// A static NULL-terminated array of C strings (the `kinds` list).
#[repr(transparent)]
#[derive(Debug)]
pub struct Kinds<const N: usize>(pub [*const c_char; N]);

// SAFETY: the pointers are to static string literals and never written.
unsafe impl<const N: usize> Sync for Kinds<N> {}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<LlStr>() == 16);
    assert!(size_of::<LlHost>() == 64);
    assert!(size_of::<LlPluginV1>() == 64);
};

/// What a check concluded (Nagios numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// Healthy.
    Ok = 0,
    /// Working, but not well: `degraded`.
    Warning = 1,
    /// The target is failing: `unhealthy`, `error_kind = "rejected"`.
    Critical = 2,
    /// Could not tell: `unknown`.
    Unknown = 3,
}

/// Returned by the SDK when the plugin itself failed (an `Err` or a panic).
pub const STATUS_ERROR: i32 = 4;

/// Log levels for [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    /// Error.
    Error = 1,
    /// Warning.
    Warn = 2,
    /// Info.
    Info = 3,
    /// Debug.
    Debug = 4,
    /// Trace.
    Trace = 5,
}

/// The host's services during one call. Everything passed in is copied.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    raw: Option<&'a LlHost>,
}

impl<'a> Host<'a> {
    /// Wraps the pointer the host passed.
    ///
    /// # Safety
    /// `p` must be null or point to a valid `lifeline_host` for `'a`.
    pub unsafe fn from_raw(p: *const LlHost) -> Self {
        // SAFETY: guaranteed by the caller (the host passes a valid pointer for the call).
        Self {
            raw: unsafe { p.as_ref() },
        }
    }

    /// Sets the result's one-line message (last call wins).
    pub fn set_message(&self, msg: &str) {
        if let Some(h) = self.raw
            && let Some(f) = h.set_message
        {
            f(h.ctx, LlStr::borrow(msg));
        }
    }

    /// Reports the latency the plugin measured (otherwise the host's wall time is used).
    pub fn set_latency(&self, d: Duration) {
        if let Some(h) = self.raw
            && let Some(f) = h.set_latency
        {
            f(h.ctx, d.as_secs_f64());
        }
    }

    /// Adds a value, exported as `lifeline_check_perfdata{label}` (use base units).
    pub fn perfdata(&self, label: &str, value: f64) {
        if let Some(h) = self.raw
            && let Some(f) = h.add_perfdata
        {
            f(h.ctx, LlStr::borrow(label), value);
        }
    }

    /// Logs through the agent.
    pub fn log(&self, level: Level, msg: &str) {
        if let Some(h) = self.raw
            && let Some(f) = h.log
        {
            f(h.ctx, level as u32, LlStr::borrow(msg));
        }
    }

    /// True once the host gave up on this call: return as soon as possible.
    pub fn is_cancelled(&self) -> bool {
        match self.raw {
            Some(h) => h.is_cancelled.is_some_and(|f| f(h.ctx) != 0),
            None => false,
        }
    }

    /// The call's absolute deadline.
    pub fn deadline(&self) -> Option<SystemTime> {
        let ms = self.raw?.deadline_unix_ms;
        (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Time left until the deadline (zero when past it; 10 s when the host set none).
    pub fn time_left(&self) -> Duration {
        match self.deadline() {
            Some(d) => d
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
            None => Duration::from_secs(10),
        }
    }
}

/// A check plugin. One value is one configured check's instance.
pub trait CheckPlugin: Sized + Send + 'static {
    /// Plugin name, `[a-z0-9_]+` (e.g. `c"threshold"`).
    const NAME: &'static CStr;
    /// Plugin version, semver (e.g. `c"0.1.0"`).
    const VERSION: &'static CStr;
    /// Custom-rule plugins set this to receive the JSON snapshot of every check.
    const WANTS_STATE: bool = false;

    /// Creates an instance for a check of `kind` with the check's `config` table as
    /// JSON. `Err` refuses the config; the message is shown to the operator. May be called
    /// once at config load only to validate (then dropped): keep it cheap.
    fn create(kind: &str, config_json: &str, host: &Host<'_>) -> Result<Self, String>;

    /// One attempt. `state_json` is `{}`-shaped state of every check when
    /// [`CheckPlugin::WANTS_STATE`], else empty. `Err` is a plugin failure
    /// (`error_kind = "plugin"`), not a verdict about the target.
    fn check(&mut self, state_json: &str, host: &Host<'_>) -> Result<Status, String>;
}

/// Support code for [`export_plugin!`]; not a stable API.
#[doc(hidden)]
pub mod __rt {
    use super::*;

    thread_local! {
        static IN_CALL: Cell<bool> = const { Cell::new(false) };
        static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    static HOOK: Once = Once::new();

    /// Installs (once) a panic hook that records panics raised inside plugin calls
    /// instead of printing them, and defers to the previous hook otherwise.
    fn install_hook() {
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if IN_CALL.with(Cell::get) {
                    let loc = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    let text = format!("{}{loc}", payload_text(info.payload()));
                    LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
                } else {
                    prev(info);
                }
            }));
        });
    }

    fn payload_text(p: &(dyn Any + Send)) -> String {
        if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        }
    }

    /// Runs `f` with panics caught; `Err` carries the panic text.
    fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
        install_hook();
        IN_CALL.with(|c| c.set(true));
        let r = catch_unwind(AssertUnwindSafe(f));
        IN_CALL.with(|c| c.set(false));
        r.map_err(|p| {
            LAST_PANIC
                .with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| payload_text(&*p))
        })
    }

    /// True if `b` is a valid plugin name (`[a-z0-9_]+`).
    pub const fn valid_name(b: &[u8]) -> bool {
        if b.is_empty() {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
                return false;
            }
            i += 1;
        }
        true
    }

    /// `create` for `T`.
    ///
    /// # Safety
    /// Called by the host with a valid `host` pointer, borrowed strings valid for the call
    /// and a writable `out`.
    pub unsafe extern "C" fn create<T: CheckPlugin>(
        host: *const LlHost,
        kind: LlStr,
        config: LlStr,
        out: *mut *mut c_void,
    ) -> i32 {
        // SAFETY: the host passes a valid lifeline_host for the duration of the call.
        let h = unsafe { Host::from_raw(host) };
        // SAFETY: the host passes strings valid for the duration of the call.
        let (kind, config) = unsafe { (kind.as_str(), config.as_str()) };
        let (Some(kind), Some(config)) = (kind, config) else {
            h.set_message("kind or config is not valid UTF-8");
            return 1;
        };
        if out.is_null() {
            h.set_message("host passed a null instance pointer");
            return 1;
        }
        match guarded(|| T::create(kind, config, &h)) {
            Ok(Ok(p)) => {
                let raw = Box::into_raw(Box::new(p)).cast::<c_void>();
                // SAFETY: `out` is non-null and writable (host contract).
                unsafe { *out = raw };
                0
            }
            Ok(Err(msg)) => {
                h.set_message(&msg);
                1
            }
            Err(panic) => {
                h.set_message(&format!("plugin panicked in create: {panic}"));
                1
            }
        }
    }

    /// `check` for `T`.
    ///
    /// # Safety
    /// `instance` must come from [`create`] for the same `T` and not be in use by another
    /// call; `host` and `state` valid for the call.
    pub unsafe extern "C" fn check<T: CheckPlugin>(
        instance: *mut c_void,
        host: *const LlHost,
        state: LlStr,
    ) -> i32 {
        // SAFETY: the host passes a valid lifeline_host for the duration of the call.
        let h = unsafe { Host::from_raw(host) };
        // SAFETY: the state string is valid for the duration of the call.
        let Some(state) = (unsafe { state.as_str() }) else {
            h.set_message("state is not valid UTF-8");
            return STATUS_ERROR;
        };
        // SAFETY: `instance` was made by `create::<T>` and the host never runs two checks
        // on one instance at once, so this is the only reference.
        let Some(plugin) = (unsafe { instance.cast::<T>().as_mut() }) else {
            h.set_message("host passed a null instance");
            return STATUS_ERROR;
        };
        match guarded(|| plugin.check(state, &h)) {
            Ok(Ok(s)) => s as i32,
            Ok(Err(msg)) => {
                h.set_message(&msg);
                STATUS_ERROR
            }
            Err(panic) => {
                h.set_message(&format!("plugin panicked: {panic}"));
                STATUS_ERROR
            }
        }
    }

    /// `destroy` for `T`.
    ///
    /// # Safety
    /// `instance` must come from [`create`] for the same `T`, and no call may be using it.
    pub unsafe extern "C" fn destroy<T: CheckPlugin>(instance: *mut c_void) {
        if instance.is_null() {
            return;
        }
        // SAFETY: made by Box::into_raw in `create::<T>`; the host calls destroy once,
        // when no check runs.
        let b = unsafe { Box::from_raw(instance.cast::<T>()) };
        let _ = guarded(move || drop(b));
    }
}

/// Exports `$ty` (a [`CheckPlugin`]) as this library's plugin, implementing `kinds`.
///
/// Use it once per `cdylib`. The build fails unless `panic = "unwind"`.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty, kinds: [$($kind:literal),+ $(,)?]) => {
        #[cfg(not(panic = "unwind"))]
        compile_error!("lifeline plugins must be built with panic = \"unwind\" (a panic would abort the agent)");

        const _: () = assert!(
            $crate::__rt::valid_name(<$ty as $crate::CheckPlugin>::NAME.to_bytes()),
            "CheckPlugin::NAME must match [a-z0-9_]+"
        );

        /// The plugin's entry point (lifeline plugin ABI 1).
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn lifeline_plugin_entry_v1() -> *const $crate::LlPluginV1 {
            static KINDS: $crate::Kinds<{ [$($kind),+].len() + 1 }> =
                $crate::Kinds([$(concat!($kind, "\0").as_ptr().cast()),+, ::core::ptr::null()]);
            static TABLE: $crate::LlPluginV1 = $crate::LlPluginV1 {
                abi_major: $crate::ABI_MAJOR,
                abi_minor: $crate::ABI_MINOR,
                struct_size: ::core::mem::size_of::<$crate::LlPluginV1>() as u32,
                flags: $crate::FLAG_RUST_SDK
                    | (if cfg!(panic = "unwind") { $crate::FLAG_PANIC_UNWIND } else { 0 })
                    | (if <$ty as $crate::CheckPlugin>::WANTS_STATE {
                        $crate::FLAG_WANTS_STATE
                    } else {
                        0
                    }),
                name: <$ty as $crate::CheckPlugin>::NAME.as_ptr(),
                version: <$ty as $crate::CheckPlugin>::VERSION.as_ptr(),
                kinds: KINDS.0.as_ptr(),
                create: Some($crate::__rt::create::<$ty>),
                check: Some($crate::__rt::check::<$ty>),
                destroy: Some($crate::__rt::destroy::<$ty>),
            };
            &TABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Demo(u32);

    impl CheckPlugin for Demo {
        const NAME: &'static CStr = c"demo";
        const VERSION: &'static CStr = c"0.0.1";
        fn create(kind: &str, config_json: &str, _host: &Host<'_>) -> Result<Self, String> {
            if config_json.contains("bad") {
                return Err(format!("bad config for {kind}"));
            }
            Ok(Demo(0))
        }
        fn check(&mut self, _state: &str, host: &Host<'_>) -> Result<Status, String> {
            self.0 += 1;
            if self.0 == 2 {
                panic!("boom on call {}", self.0);
            }
            host.perfdata("calls", f64::from(self.0));
            Ok(Status::Ok)
        }
    }

    export_plugin!(Demo, kinds: ["demo", "demo_v2"]);

    struct Seen {
        msg: RefCell<String>,
    }

    extern "C" fn set_message(ctx: *mut c_void, s: LlStr) {
        // SAFETY: ctx is the `Seen` the test passed; s is valid for this call.
        let seen = unsafe { &*ctx.cast::<Seen>() };
        // SAFETY: the string is valid during the callback.
        *seen.msg.borrow_mut() = unsafe { s.as_str() }.unwrap_or("").to_string();
    }

    fn host(seen: &Seen) -> LlHost {
        LlHost {
            struct_size: size_of::<LlHost>() as u32,
            ctx: (seen as *const Seen).cast_mut().cast(),
            set_message: Some(set_message),
            set_latency: None,
            add_perfdata: None,
            log: None,
            is_cancelled: None,
            deadline_unix_ms: 0,
        }
    }

    #[test]
    fn table_and_panic_guard() {
        let t = lifeline_plugin_entry_v1();
        // SAFETY: the table is static.
        let t = unsafe { &*t };
        assert_eq!(t.abi_major, ABI_MAJOR);
        assert_ne!(t.flags & FLAG_PANIC_UNWIND, 0);
        assert_ne!(t.flags & FLAG_RUST_SDK, 0);
        let seen = Seen {
            msg: RefCell::new(String::new()),
        };
        let h = host(&seen);
        let mut inst: *mut c_void = std::ptr::null_mut();
        let create = t.create.unwrap();
        let check = t.check.unwrap();
        // SAFETY: valid host, strings and out pointer for the call.
        let rc = unsafe {
            create(
                &h,
                LlStr::borrow("demo"),
                LlStr::borrow("{\"x\":\"bad\"}"),
                &mut inst,
            )
        };
        assert_eq!(rc, 1);
        assert_eq!(*seen.msg.borrow(), "bad config for demo");
        // SAFETY: as above.
        let rc = unsafe { create(&h, LlStr::borrow("demo"), LlStr::borrow("{}"), &mut inst) };
        assert_eq!(rc, 0);
        // SAFETY: inst from create; one call at a time.
        assert_eq!(unsafe { check(inst, &h, LlStr::borrow("")) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { check(inst, &h, LlStr::borrow("")) }, STATUS_ERROR);
        assert!(
            seen.msg
                .borrow()
                .starts_with("plugin panicked: boom on call 2 at "),
            "{}",
            seen.msg.borrow()
        );
        // SAFETY: as above.
        assert_eq!(unsafe { check(inst, &h, LlStr::borrow("")) }, 0);
        // SAFETY: inst from create, no call running.
        unsafe { t.destroy.unwrap()(inst) };
    }
}
