//! Work split over the spare cores, for the few jobs big enough to gain from it: decoding
//! a large selection and evaluating a large range query. Threads are scoped (borrowing
//! the caller's data, joined before returning) and counted across all callers: together
//! queries borrow at most one thread fewer than the machine has cores, however many run.
//! Borrowed threads run at a lower priority (nice 10), so when ingest and a large query
//! want the same core, the scheduler gives it to ingest: a query goes faster when the
//! machine is idle and no slower than on one thread when it is not.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Worker threads queries have borrowed beyond their own, across all queries.
static BORROWED: AtomicUsize = AtomicUsize::new(0);

/// Below this much work (samples plus steps) one thread is quicker than starting more.
/// Tests split everything, so the equivalence tests run the parallel path.
const PARALLEL_WORK: usize = if cfg!(test) { 1 } else { 200_000 };

/// Threads borrowed for one map, returned when dropped.
struct Borrowed(usize);

impl Drop for Borrowed {
    fn drop(&mut self) {
        BORROWED.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// Borrows up to `want` extra threads. All queries together borrow at most one fewer
/// than the machine's cores, so the query's own thread, the other queries and ingest
/// always have a core between them; none is borrowed when no core is spare.
fn borrow(want: usize) -> Borrowed {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cap = cores.saturating_sub(1);
    let mut got = 0;
    let _ = BORROWED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
        got = want.min(cap.saturating_sub(busy));
        Some(busy + got)
    });
    Borrowed(got)
}

/// `f` over `items`, split across spare cores when `work` is large. Results keep the
/// order of `items`.
pub fn par_map<T: Sync, R: Send>(items: &[T], work: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let extra = if work >= PARALLEL_WORK && items.len() > 1 { borrow(items.len() - 1) } else { Borrowed(0) };
    if extra.0 == 0 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(extra.0 + 1);
    std::thread::scope(|scope| {
        let f = &f;
        let others: Vec<_> = items
            .chunks(chunk)
            .skip(1)
            .map(|c| {
                scope.spawn(move || {
                    yield_to_others();
                    c.iter().map(f).collect::<Vec<R>>()
                })
            })
            .collect();
        let mut out: Vec<R> = items[..chunk].iter().map(f).collect();
        for other in others {
            out.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        out
    })
}

/// Lowers the calling thread's priority to nice 10 (Linux's `setpriority` takes a thread
/// id): a borrowed thread yields to ingest and to queries' own threads.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn yield_to_others() {
    // SAFETY: gettid and setpriority take no pointers and change only this thread's
    // scheduling priority; a failure (no permission is needed to lower it) is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_others() {}

#[cfg(test)]
mod tests {
    #[test]
    fn large_maps_split_across_threads_and_keep_their_order() {
        let items: Vec<usize> = (0..10_000).collect();
        let out = super::par_map(&items, usize::MAX, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    }
}
