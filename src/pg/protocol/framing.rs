//! Where one backend message ends, decided from its 5-byte header before anything is
//! sized by it.
//!
//! The length field is the server's word, and a corrupt or hostile one (0xFFFFFFFF, 2^31-1)
//! must not make us reserve gigabytes while waiting for a body that never comes. So the
//! header is checked first: a known type byte, a length of at least 4 (it counts itself),
//! and at most what PostgreSQL can send for that type. The read buffer then only ever holds
//! what has arrived, and the message is parsed once all of it is there. This is pure Rust,
//! tested without a server or Python.

use std::fmt;

/// The longest message the types that may be long can have: the server builds a message
/// in one buffer of at most 1 GiB - 1 bytes (its `MaxAllocSize`), and the length field
/// counts its own 4 bytes.
pub const MAX_LONG_MESSAGE_LEN: u32 = (1 << 30) - 1 + 4;

/// The longest the other types can be. libpq treats a longer one as lost
/// synchronisation too (its limit for types that are not `VALID_LONG_MESSAGE_TYPE`).
pub const MAX_SHORT_MESSAGE_LEN: u32 = 30_000;

/// Message types that can be long: RowDescription, DataRow, CopyData, ErrorResponse,
/// NoticeResponse, NotificationResponse (libpq's list), and ParameterDescription, which
/// takes 4 bytes per parameter for up to 65,535 parameters.
const LONG_TYPES: &[u8] = b"TDdENAt";

/// Every message type the protocol core understands.
const KNOWN_TYPES: &[u8] = b"123AcCdDEGHIKnNRsStTZ";

/// Why the stream cannot be read on: the connection is out of step with the server.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    UnknownType(u8),
    BadLength { tag: u8, len: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownType(tag) => {
                write!(f, "unexpected message type {:?}", char::from(*tag))
            }
            FrameError::BadLength { tag, len } => {
                let max = max_len(*tag);
                write!(
                    f,
                    "invalid length {len} for a message of type {:?} (expected 4 to {max})",
                    char::from(*tag)
                )
            }
        }
    }
}

/// The longest length each type byte may have; 0 for a type we do not know. A table, since
/// this runs once per message (once per row of a result): `slice::contains` over the type
/// lists cost a `memchr` call per message, a third of the dispatch's own instructions.
const MAX_LEN: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < KNOWN_TYPES.len() {
        table[KNOWN_TYPES[i] as usize] = MAX_SHORT_MESSAGE_LEN;
        i += 1;
    }
    let mut i = 0;
    while i < LONG_TYPES.len() {
        table[LONG_TYPES[i] as usize] = MAX_LONG_MESSAGE_LEN;
        i += 1;
    }
    table
};

fn max_len(tag: u8) -> u32 {
    MAX_LEN[tag as usize]
}

/// The size (type byte, length, body) of the first message in `buf` once all of it has
/// arrived; `None` while more is needed.
pub fn complete_message(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let max = max_len(tag);
    if max == 0 {
        return Err(FrameError::UnknownType(tag));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if !(4..=max).contains(&len) {
        return Err(FrameError::BadLength { tag, len });
    }
    let total = len as usize + 1;
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tag: u8, len: u32) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn a_partial_header_waits() {
        assert_eq!(complete_message(b""), Ok(None));
        assert_eq!(complete_message(b"Z\0\0\0"), Ok(None));
    }

    #[test]
    fn a_whole_message_is_measured() {
        let mut msg = header(b'Z', 5);
        msg.push(b'I');
        assert_eq!(complete_message(&msg), Ok(Some(6)));
        msg.extend_from_slice(b"Z\0");
        assert_eq!(complete_message(&msg), Ok(Some(6)));
        assert_eq!(complete_message(&msg[..5]), Ok(None));
    }

    #[test]
    fn huge_and_negative_lengths_are_refused_from_the_header() {
        for len in [
            0xFFFF_FFFF,
            0x7FFF_FFFF,
            0x8000_0000,
            MAX_LONG_MESSAGE_LEN + 1,
        ] {
            assert_eq!(
                complete_message(&header(b'D', len)),
                Err(FrameError::BadLength { tag: b'D', len })
            );
        }
        assert_eq!(
            complete_message(&header(b'D', MAX_LONG_MESSAGE_LEN)),
            Ok(None)
        );
    }

    #[test]
    fn lengths_below_four_are_refused() {
        for len in 0..4 {
            assert!(complete_message(&header(b'1', len)).is_err());
        }
        assert_eq!(complete_message(&header(b'1', 4)), Ok(Some(5)));
    }

    #[test]
    fn short_types_have_the_short_limit() {
        assert_eq!(
            complete_message(&header(b'Z', MAX_SHORT_MESSAGE_LEN)),
            Ok(None)
        );
        assert!(complete_message(&header(b'Z', MAX_SHORT_MESSAGE_LEN + 1)).is_err());
        assert!(complete_message(&header(b'S', 1 << 20)).is_err());
        // a ParameterDescription of 65,535 parameters is legitimate
        assert_eq!(complete_message(&header(b't', 6 + 4 * 65_535)), Ok(None));
    }

    #[test]
    fn the_table_knows_exactly_the_listed_types() {
        for tag in 0..=255u8 {
            let expected = if LONG_TYPES.contains(&tag) {
                MAX_LONG_MESSAGE_LEN
            } else if KNOWN_TYPES.contains(&tag) {
                MAX_SHORT_MESSAGE_LEN
            } else {
                0
            };
            assert_eq!(max_len(tag), expected, "type {tag}");
        }
    }

    #[test]
    fn unknown_types_are_refused_at_once() {
        assert_eq!(
            complete_message(&header(b'!', 4)),
            Err(FrameError::UnknownType(b'!'))
        );
        assert!(FrameError::UnknownType(b'!').to_string().contains("'!'"));
    }
}
