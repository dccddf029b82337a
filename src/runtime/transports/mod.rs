//! Transports: Rust objects speaking asyncio's transport interface to any protocol, and
//! straight to a protocol written in Rust when one registered itself (`native`, the fast
//! path the driver's protocol core takes).

use pyo3::prelude::*;

mod common;
pub use common::is_interrupt;
pub mod datagram;
pub mod native;
pub mod stream;
pub mod tls;

use datagram::DatagramTransport;
use stream::StreamTransport;

/// The transport owning a descriptor in the reactor.
pub enum Owner {
    Stream(Py<StreamTransport>),
    Datagram(Py<DatagramTransport>),
}

impl Owner {
    /// A transport object handed over from Python, if it is one of ours.
    pub fn from_object(obj: &Bound<'_, PyAny>) -> Option<Owner> {
        if let Ok(t) = obj.downcast::<StreamTransport>() {
            return Some(Owner::Stream(t.clone().unbind()));
        }
        obj.downcast::<DatagramTransport>()
            .ok()
            .map(|t| Owner::Datagram(t.clone().unbind()))
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Owner {
        match self {
            Owner::Stream(t) => Owner::Stream(t.clone_ref(py)),
            Owner::Datagram(t) => Owner::Datagram(t.clone_ref(py)),
        }
    }

    pub fn object<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Owner::Stream(t) => t.bind(py).clone().into_any(),
            Owner::Datagram(t) => t.bind(py).clone().into_any(),
        }
    }

    /// Readiness from the reactor.
    pub fn on_ready(
        &self,
        py: Python<'_>,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> PyResult<()> {
        match self {
            Owner::Stream(t) => {
                StreamTransport::on_ready(t.bind(py), readable, writable, read_closed)
            }
            Owner::Datagram(t) => DatagramTransport::on_ready(t.bind(py), readable, writable),
        }
    }

    /// The loop closed under the transport: forget the protocol without calling it.
    pub fn abandon(&self, py: Python<'_>) {
        match self {
            Owner::Stream(t) => t.get().abandon(py),
            Owner::Datagram(t) => t.get().abandon(py),
        }
    }
}
