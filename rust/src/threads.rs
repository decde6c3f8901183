//! The thread pool the kernels run in.
//!
//! By default that is rayon's global pool: one thread per core of the machine (or `RAYON_NUM_THREADS`).
//! A process that shares the machine with others of its kind — a Spark executor's Python worker runs
//! one task on `spark.task.cpus` cores while other tasks run beside it — sets its own size with [`set`],
//! which replaces the pool for every later kernel call of the process. The global pool cannot be resized
//! once built, so the replacement is a pool of our own that [`install`] runs kernels in.

use std::sync::{Arc, PoisonError, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::Error;

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

fn pool() -> Option<Arc<ThreadPool>> {
    // The lock only guards a pointer swap: a poisoned lock still holds a valid pointer.
    POOL.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Run every later kernel call in a pool of `threads` threads; `0` goes back to rayon's global pool.
/// Calls already running finish in the pool they started in (the old pool ends with the last of them).
pub fn set(threads: usize) -> Result<(), Error> {
    let new = if threads == 0 {
        None
    } else {
        let built = ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("skewless-{i}"))
            .build()
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "could not start {threads} kernel threads ({e}); ask for fewer"
                ))
            })?;
        Some(Arc::new(built))
    };
    *POOL.write().unwrap_or_else(PoisonError::into_inner) = new;
    Ok(())
}

/// The number of threads a kernel called now runs on.
pub fn current() -> usize {
    pool().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
}

/// Run `f` in the kernels' pool (the one [`set`] chose, else the caller's: rayon's global pool).
/// A panic in `f` resumes in the caller.
pub fn install<T: Send, F: FnOnce() -> T + Send>(f: F) -> T {
    match pool() {
        Some(p) => p.install(f),
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // The pool is process-wide: tests that set it take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn set_sizes_the_pool_kernels_run_in_and_zero_restores_the_global_one() {
        let _g = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        set(3).unwrap();
        assert_eq!(current(), 3);
        assert_eq!(install(rayon::current_num_threads), 3);
        set(1).unwrap();
        assert_eq!(install(rayon::current_num_threads), 1);
        set(0).unwrap();
        assert_eq!(current(), rayon::current_num_threads());
        assert_eq!(install(rayon::current_num_threads), rayon::current_num_threads());
    }

    #[test]
    fn a_panic_inside_the_pool_reaches_the_caller() {
        let _g = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        set(2).unwrap();
        let caught = std::panic::catch_unwind(|| install(|| panic!("boom")));
        set(0).unwrap();
        assert!(caught.is_err());
    }
}
