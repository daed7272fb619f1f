//! The recorder's memory between scrapes, measured by the allocator.
//!
//! A histogram of a recorder made with `build_recorder` keeps every sample
//! until something drains it. [`Metrics::keep_up`] must drain them on its
//! own, with nobody scraping `/metrics`: counted here with a global
//! allocator that tracks the bytes in use (its own test binary, so that no
//! other test allocates at the same time).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use percache::telemetry::{Metrics, UPKEEP_EVERY};

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn in_use() -> isize {
    IN_USE.load(Ordering::Relaxed)
}

/// Records `n` request durations, as the HTTP middleware does.
fn record_requests(metrics: &Metrics, n: usize) {
    metrics::with_local_recorder(metrics.recorder(), || {
        let h = metrics::histogram!(
            "percache_http_request_duration_seconds",
            "method" => "GET", "route" => "/widgets/{id}", "status" => "200",
        );
        for i in 0..n {
            h.record(0.0001 * (i % 100) as f64);
        }
    });
}

#[tokio::test(start_paused = true)]
async fn samples_recorded_between_scrapes_are_freed_without_a_scrape() {
    // Arrange: a recorder kept up, and 200,000 requests recorded into it.
    let metrics = Metrics::new();
    let upkeep = tokio::spawn(metrics.clone().keep_up());
    tokio::task::yield_now().await;
    let before = in_use();
    record_requests(&metrics, 200_000);
    let held = in_use() - before;

    // Act: three upkeep periods pass with a little traffic in each (the
    // drained blocks are freed once the threads that record move on:
    // epoch-based reclamation), and nobody scrapes.
    for _ in 0..3 {
        tokio::time::sleep(UPKEEP_EVERY + Duration::from_millis(1)).await;
        record_requests(&metrics, 1_000);
    }
    let after = in_use() - before;
    upkeep.abort();

    // Assert: the samples took memory (8 bytes each at least) until then.
    assert!(held >= 8 * 200_000, "samples held {held} bytes");
    assert!(
        after < held / 10,
        "still {after} of {held} bytes after the upkeep"
    );
}
