//! Frontend messages postgres-protocol does not write the way we need.
//!
//! `Bind` is written by hand: parameters are encoded straight from Python objects by our
//! codecs, and an encoding failure must name the parameter, which the crate's closure-based
//! writer cannot carry.

use bytes::{BufMut, BytesMut};

/// Start a length-prefixed message with `tag`; returns the offset of the length field.
pub fn begin(tag: u8, out: &mut BytesMut) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

/// Patch the length field written by [`begin`].
pub fn finish(at: usize, out: &mut BytesMut) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(s: &str, out: &mut BytesMut) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// Reserve a value's length slot; returns its offset.
pub fn begin_value(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_i32(0);
    at
}

pub fn finish_value(at: usize, out: &mut BytesMut) {
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}
