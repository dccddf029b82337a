//! The asyncio event loop on mio: reactor, ready queue, timers, handles, transports.

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
