//! The runtime the benches run a whole agent in.

/// A multi-threaded tokio runtime with 2 workers, like production.
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
