//! The asyncio event loop on mio: the run loop with its ready queue and timer heap
//! ([`event_loop`]), the reactor ([`reactor`]), handles ([`handle`]).

use pyo3::prelude::*;

mod cell;
mod clock;
pub mod event_loop;
pub mod handle;
mod reactor;
mod timers;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    Ok(())
}
