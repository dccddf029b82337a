//! The PostgreSQL protocol core: framing, authentication, the query state machine,
//! type codecs and `Record`.

use pyo3::prelude::*;

pub mod copy;
pub mod errors;
pub mod protocol;
pub mod record;
pub mod types;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    copy::register(m)?;
    protocol::register(m)?;
    record::register(m)?;
    types::register(m)?;
    Ok(())
}
