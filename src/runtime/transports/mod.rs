//! Transports: Rust objects speaking asyncio's transport interface to any protocol, and
//! straight to the driver's protocol core when that is the protocol (the native fast path).

pub mod stream;
