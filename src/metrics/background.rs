//! Threads for work that may wait for a core: rendering and compressing a scrape, and the
//! big answers of the HTTP API (`/health/detailed`, the status page).
//!
//! At 10,000 checks a Prometheus scrape is 25 MB of text and `/health/detailed` 4 MB of
//! JSON (about 150 ms of CPU). Built on a runtime worker, such an answer stalls every
//! probe queued behind it: that is scheduler lag a user sees just by polling the agent.
//! Built on a thread of the same priority, it still takes a core on a small machine at the
//! moment probes are due. So it runs on a thread of its own at a lower priority (`nice` +
//! [`NICE`]): it gets a core whenever one is free (as fast as before on an idle machine),
//! and when probes and the answer want the same core, the probes go first.
//!
//! Also here: [`release_freed_memory`], which gives the heap's free pages back after a
//! config load (a blocking call for a blocking thread).

#![allow(unsafe_code)]

/// How much lower than the agent's own priority a background thread runs.
pub const NICE: libc::c_int = 10;

/// Runs `f` on a new thread named `name` at [`NICE`] below the agent's priority; the thread
/// ends with `f`. When no thread can be started (a thread limit), `f` runs on the runtime's
/// blocking pool at the agent's priority instead, so the work is never lost.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    let job = std::sync::Arc::new(parking_lot::Mutex::new(Some(f)));
    let mine = job.clone();
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            if let Some(f) = mine.lock().take() {
                f();
            }
        });
    if let Err(e) = started {
        tracing::debug!(error = %e, thread = name, "no background thread; using the blocking pool");
        if let Some(f) = job.lock().take() {
            tokio::task::spawn_blocking(f);
        }
    }
}

/// Runs `f` as [`spawn`] does and waits for its result without holding a runtime worker;
/// `None` when `f` panicked.
pub async fn run<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(name, move || {
        let _ = tx.send(f());
    });
    rx.await.ok()
}

/// Lowers the calling thread's priority by [`NICE`]. On Linux `setpriority` with a thread
/// id applies to that thread alone. Best effort: a failure leaves the thread as it was.
fn lower_priority() {
    // SAFETY: `gettid` has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: `getpriority`/`setpriority` take plain integers and touch no memory of ours.
    unsafe {
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if *libc::__errno_location() == 0 {
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, (now + NICE).min(19));
        }
    }
}

/// Hands the heap's free pages back to the kernel. A full config load at 100,000 checks
/// builds a 300 MiB document and frees it; glibc keeps such memory for reuse, so without
/// this it stays in the agent's RSS for good. Blocking (it walks the heap): call it on a
/// blocking thread.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often the agent gives free heap pages back while it runs ([`trim_every`]).
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Calls [`release_freed_memory`] every `every` (on a blocking thread) until `cancel`.
///
/// The first seconds of an agent (every check's first result and transition, at once)
/// and a burst of changes leave freed memory that glibc keeps for reuse; at 10,000 checks
/// that is a few MiB of RSS that the steady state never needs again. A trim of a heap of
/// that size takes about a millisecond.
pub async fn trim_every(every: std::time::Duration, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let took = tokio::task::spawn_blocking(|| {
            let start = tokio::time::Instant::now();
            release_freed_memory();
            start.elapsed()
        })
        .await;
        if let Ok(took) = took {
            tracing::debug!(
                took_us = took.as_micros() as u64,
                "free heap pages returned"
            );
        }
    }
}

/// The calling thread's nice value (for the tests).
#[cfg(test)]
fn current_nice() -> libc::c_int {
    // SAFETY: as in `lower_priority`.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trim loop trims on its period and ends when the agent stops.
    #[tokio::test(start_paused = true)]
    async fn the_trim_loop_ends_with_the_agent() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let every = std::time::Duration::from_secs(30);
        let task = tokio::spawn(trim_every(every, cancel.clone()));
        // Half a period past the third trim: the loop is waiting for its next tick, not
        // on a trim in flight (paused time would jump past a timeout meanwhile).
        tokio::time::sleep(every * 3 + every / 2).await;
        assert!(!task.is_finished(), "the loop runs while the agent does");
        cancel.cancel();
        tokio::time::timeout(every, task)
            .await
            .expect("the loop ends once cancelled")
            .unwrap();
    }

    #[tokio::test]
    async fn a_background_thread_runs_its_job_below_the_callers_priority() {
        let mine = current_nice();
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn("test-background", move || {
            let name = std::thread::current().name().map(str::to_owned);
            let _ = tx.send((current_nice(), name));
        });
        let (nice, name) = rx.await.expect("the job ran");
        assert_eq!(nice, (mine + NICE).min(19));
        assert_eq!(name.as_deref(), Some("test-background"));
        // The caller's own priority is untouched.
        assert_eq!(current_nice(), mine);
    }

    #[tokio::test]
    async fn run_returns_the_result_or_none_when_the_job_panicked() {
        assert_eq!(run("test-run", || 6 * 7).await, Some(42));
        let none: Option<u8> = run("test-panic", || panic!("job failed")).await;
        assert_eq!(none, None);
    }
}
