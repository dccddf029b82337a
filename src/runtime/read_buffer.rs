//! One receive buffer per loop thread, shared by its transports and socket operations: a
//! read is handed on (copied into bytes, or to the protocol) before the next one starts, so a
//! new connection costs no 256 KiB allocation.

use std::cell::Cell;

pub const READ_CHUNK: usize = 256 * 1024;

thread_local! {
    static READ_BUFFER: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
}

/// The thread's buffer (a fresh one if it is lent out already), `READ_CHUNK` bytes of capacity.
pub fn take_read_buffer() -> Vec<u8> {
    READ_BUFFER
        .with(|cell| cell.take())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

pub fn give_back_read_buffer(buf: Vec<u8>) {
    READ_BUFFER.with(|cell| cell.set(Some(buf)));
}
