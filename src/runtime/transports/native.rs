//! The native receive path, as a seam: a protocol implemented in Rust can take received
//! bytes as a slice, with no bytes object and no Python call per read.
//!
//! The loop must not know the driver (the driver depends on the loop's write helpers, not
//! the other way round), so the driver registers its protocol type and a receive function
//! once, at module init. A transport compares its protocol's type with the registered one
//! when the protocol is set, and then calls the function pointer on every read: no lookup
//! per read. Without a registration every protocol takes the asyncio path.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

/// Hands `data`, just received, to `protocol` (an instance of the registered type).
pub type NativeReceive = fn(protocol: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<()>;

struct Registration {
    protocol_type: Py<PyType>,
    receive: NativeReceive,
}

static REGISTERED: GILOnceCell<Registration> = GILOnceCell::new();

/// Make transports hand bytes to protocols of `protocol_type` (or a subclass) through
/// `receive`.
/// One registration per interpreter; a second one is ignored (the module was initialised
/// again and registers the same thing).
pub fn register_native_receiver(protocol_type: &Bound<'_, PyType>, receive: NativeReceive) {
    let py = protocol_type.py();
    let _ = REGISTERED.set(
        py,
        Registration {
            protocol_type: protocol_type.clone().unbind(),
            receive,
        },
    );
}

/// The native receive function for `protocol`, if its type is the registered one or a
/// Python subclass of it (the driver's asyncpg-named `Protocol`, which APM agents wrap, is
/// one: it adds Python methods but receives through the same Rust state). The object's own
/// type is what counts, not its `__class__`: a proxy around a protocol (an agent's) claims
/// the class but has none of its state, and takes the asyncio path.
pub(crate) fn native_receiver(protocol: &Bound<'_, PyAny>) -> Option<NativeReceive> {
    // The loop's own TLS layer receives ciphertext the same way (see `tls`).
    if protocol.is_exact_instance_of::<super::tls::TlsTransport>() {
        return Some(super::tls::receive_ciphertext);
    }
    let registered = REGISTERED.get(protocol.py())?;
    protocol
        .get_type()
        .is_subclass(registered.protocol_type.bind(protocol.py()))
        .unwrap_or(false)
        .then_some(registered.receive)
}
