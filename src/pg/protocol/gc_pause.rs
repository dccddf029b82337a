//! Keeps Python's cyclic garbage collector off while a large read is decoded.
//!
//! Decoding allocates rows, lists and other containers by the thousand, none of them in a
//! cycle; with the collector on, every 700 allocations it walks the young objects, and every
//! so often everything decoded so far (most of the cost of a big fetch of arrays). Paused,
//! the collector catches up once afterwards: collection is deferred, nothing is skipped.
//! Only the decoding itself runs paused, not callbacks into user code (notifications, log
//! messages), which run after the read.

use pyo3::prelude::*;
use pyo3::types::PyModule;

/// Below this many bytes a read is decoded with the garbage collector left as it is.
const GC_PAUSE_MIN_BYTES: usize = 16 * 1024;

/// The collector paused for as long as this value lives (if it was on and the read is large).
pub(super) struct GcPause<'py> {
    gc: Option<Bound<'py, PyModule>>,
}

impl<'py> GcPause<'py> {
    pub(super) fn new(py: Python<'py>, bytes: usize) -> GcPause<'py> {
        if bytes < GC_PAUSE_MIN_BYTES {
            return GcPause { gc: None };
        }
        let paused = py.import(pyo3::intern!(py, "gc")).ok().filter(|gc| {
            gc.call_method0(pyo3::intern!(py, "isenabled"))
                .and_then(|on| on.is_truthy())
                .unwrap_or(false)
                && gc.call_method0(pyo3::intern!(py, "disable")).is_ok()
        });
        GcPause { gc: paused }
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some(gc) = self.gc.take() {
            let _ = gc.call_method0(pyo3::intern!(gc.py(), "enable"));
        }
    }
}
