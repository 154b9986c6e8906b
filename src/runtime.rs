//! The process around the pipeline: the allocator's options, and where long synchronous work
//! runs. A chunk's diff and its sled write each hold a thread for milliseconds; on one of
//! the runtime's two workers that stalls every task queued behind it, above all the delivery
//! lanes waiting on their sockets, so deliveries barely moved while a large poll was stored.
//! Such work gives its worker's queue to another thread first.

use std::future::Future;
use tokio::runtime::{Handle, RuntimeFlavor};

/// jemalloc's options (its `malloc_conf`, NUL-terminated), for the binary and the benchmarks
/// that measure it: one arena (the threads' caches take the contention away; more arenas held
/// the benchmark's 1M-record ingest above 150 MB), and freed pages returned to the system after
/// 200 ms instead of 10 s.
pub const JEMALLOC_OPTIONS: &[u8; 46] = b"narenas:1,dirty_decay_ms:200,muzzy_decay_ms:0\0";

/// Whether this thread runs tasks of a multi-threaded runtime, where a worker can hand its
/// queue on (`block_in_place`); a current-thread runtime (most tests) has no other thread.
fn can_hand_on() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Runs `f`, which holds its thread for a while, without holding up the runtime's other tasks.
pub(crate) fn hold_thread<R>(f: impl FnOnce() -> R) -> R {
    if can_hand_on() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Runs `work`, mostly synchronous with few short waits, as [`hold_thread`] does: on its own
/// thread to the end, its waits included.
pub(crate) async fn hold_thread_async<F: Future>(work: F) -> F::Output {
    if can_hand_on() {
        tokio::task::block_in_place(|| Handle::current().block_on(work))
    } else {
        work.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Spins on `flag` for up to two seconds; whether it was set.
    fn saw(flag: &AtomicBool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_the_work_just_runs() {
        assert_eq!(hold_thread(|| 6 * 7), 42);
        let got = hold_thread_async(async {
            tokio::task::yield_now().await;
            7
        })
        .await;
        assert_eq!(got, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn on_the_only_worker_a_held_thread_lets_other_tasks_run() {
        // The test's body runs on the runtime's only worker (not on the thread that blocks on
        // the runtime), with another task queued behind it: that task runs only if the
        // worker's queue moves to another thread while the work holds this one.
        tokio::spawn(async {
            let flag = Arc::new(AtomicBool::new(false));
            let set = flag.clone();
            let other = tokio::spawn(async move { set.store(true, Ordering::SeqCst) });
            assert!(hold_thread(|| saw(&flag)), "the other task ran meanwhile");
            other.await.unwrap();
            let flag = Arc::new(AtomicBool::new(false));
            let set = flag.clone();
            let other = tokio::spawn(async move { set.store(true, Ordering::SeqCst) });
            assert!(hold_thread_async(async { saw(&flag) }).await);
            other.await.unwrap();
        })
        .await
        .unwrap();
    }
}
