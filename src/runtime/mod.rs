//! The asyncio event loop on mio: the run loop with its ready queue and timer heap
//! ([`event_loop`]), the reactor ([`reactor`]), handles ([`handle`]), transports
//! ([`transports`]).

use pyo3::prelude::*;

pub(crate) mod cell;
mod clock;
pub mod event_loop;
pub mod handle;
mod reactor;
mod read_buffer;
mod sockets;
mod timers;
pub mod transports;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<transports::stream::StreamTransport>()?;
    m.add_class::<transports::tls::TlsTransport>()?;
    m.add_class::<transports::datagram::DatagramTransport>()?;
    Ok(())
}
