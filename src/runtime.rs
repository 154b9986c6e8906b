//! Where long synchronous work runs. A chunk's diff and its sled transaction each hold a thread
//! for milliseconds; on one of the runtime's two workers that stalls every task queued behind
//! it, above all the delivery lanes waiting on their sockets, so deliveries barely moved while a
//! large poll was stored. Such work gives its worker's queue to another thread first.

use std::future::Future;
use tokio::runtime::{Handle, RuntimeFlavor};

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
