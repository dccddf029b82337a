//! numeric <-> decimal.Decimal, in PostgreSQL's binary form: base-10000 digit groups with a
//! weight (position of the first group) and a display scale.

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::pyrefs::decimal_type;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::protocol_error;

const POS: u16 = 0x0000;
const NEG: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PINF: u16 = 0xD000;
const NINF: u16 = 0xF000;

pub fn decode(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() < 8 {
        return Err(protocol_error(py, "numeric value too short"));
    }
    let ndigits = i16::from_be_bytes([data[0], data[1]]);
    let weight = i16::from_be_bytes([data[2], data[3]]) as i64;
    let sign = u16::from_be_bytes([data[4], data[5]]);
    let dscale = u16::from_be_bytes([data[6], data[7]]) as usize;
    if ndigits < 0 || data.len() != 8 + 2 * ndigits as usize {
        return Err(protocol_error(py, "numeric value has an invalid length"));
    }
    let mut text: Vec<u8> = Vec::with_capacity(8 + 4 * ndigits as usize + dscale);
    match sign {
        NAN => text.extend_from_slice(b"NaN"),
        PINF => text.extend_from_slice(b"Infinity"),
        NINF => text.extend_from_slice(b"-Infinity"),
        POS | NEG => {
            let groups = &data[8..];
            let group = |i: usize| u16::from_be_bytes([groups[2 * i], groups[2 * i + 1]]);
            if (0..ndigits as usize).any(|i| group(i) > 9999) {
                return Err(protocol_error(py, "numeric digit group out of range"));
            }
            write_numeric(
                &mut text,
                group,
                ndigits as usize,
                weight,
                dscale,
                sign == NEG,
            );
        }
        _ => {
            return Err(protocol_error(
                py,
                format!("invalid numeric sign 0x{sign:04x}"),
            ))
        }
    };
    // SAFETY: `text` is ASCII: digits, sign, point, exponent, or one of the words above.
    let text = PyString::new(py, unsafe { std::str::from_utf8_unchecked(&text) });
    let decimal = decimal_type(py)?;
    // SAFETY: both are live references; the call returns a new reference or NULL with an
    // exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyObject_CallOneArg(decimal.as_ptr(), text.as_ptr()),
        )
        .map(Bound::unbind)
    }
}

/// Append a base-10000 group: four digits, or without leading zeros for the first one.
fn push_group(out: &mut Vec<u8>, group: u16, padded: bool) {
    let digits = [
        b'0' + (group / 1000) as u8,
        b'0' + (group / 100 % 10) as u8,
        b'0' + (group / 10 % 10) as u8,
        b'0' + (group % 10) as u8,
    ];
    if padded {
        out.extend_from_slice(&digits);
    } else {
        let skip = digits.iter().take(3).take_while(|&&d| d == b'0').count();
        out.extend_from_slice(&digits[skip..]);
    }
}

/// The decimal text of a numeric given as `ndigits` base-10000 groups (`group(i)`), the
/// weight of the first group and the display scale, as `decimal.Decimal` reads it.
fn write_numeric(
    out: &mut Vec<u8>,
    group: impl Fn(usize) -> u16,
    ndigits: usize,
    weight: i64,
    dscale: usize,
    negative: bool,
) {
    let group_at = |i: i64| -> u16 {
        if i >= 0 && (i as usize) < ndigits {
            group(i as usize)
        } else {
            0
        }
    };
    if negative {
        out.push(b'-');
    }
    if dscale == 0 && ndigits > 0 && weight + 1 > ndigits as i64 {
        // an integer whose trailing zero groups the server left out: the digits that are
        // there and an exponent, as asyncpg gives it (10000 is Decimal('1E+4'))
        push_group(out, group(0), false);
        for i in 1..ndigits {
            push_group(out, group(i), true);
        }
        out.extend_from_slice(b"E+");
        out.extend_from_slice((4 * (weight + 1 - ndigits as i64)).to_string().as_bytes());
        return;
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        push_group(out, group_at(0), false);
        for i in 1..=weight {
            push_group(out, group_at(i), true);
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < dscale {
            push_group(out, group_at(i), true);
            i += 1;
        }
        out.truncate(start + dscale);
    }
}

#[cfg(test)]
fn digits_to_string(groups: &[u16], weight: i64, dscale: usize, negative: bool) -> String {
    let mut out = Vec::new();
    write_numeric(
        &mut out,
        |i| groups[i],
        groups.len(),
        weight,
        dscale,
        negative,
    );
    String::from_utf8(out).expect("ascii")
}

pub fn encode(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let py = value.py();
    let dec_type = decimal_type(py)?;
    let dec = if value.is_instance(dec_type.bind(py))? {
        value.clone()
    } else {
        dec_type
            .call1(py, (value,))
            .map_err(|e| {
                EncodeError::Invalid(format!(
                    "invalid numeric value: {}",
                    e.value(py).str().map(|s| s.to_string()).unwrap_or_default()
                ))
            })?
            .into_bound(py)
    };
    // str() of a Decimal is C code and cheaper than as_tuple(): parse its text here
    let text = dec.str()?;
    let text = text.to_str()?;
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (1u8, rest),
        None => (0u8, text),
    };
    if !unsigned.starts_with(|c: char| c.is_ascii_digit()) {
        // NaN, sNaN, Infinity
        let special = if unsigned.starts_with("Inf") {
            if sign == 1 {
                NINF
            } else {
                PINF
            }
        } else {
            NAN
        };
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(special);
        out.put_u16(0);
        return Ok(());
    }
    let (mantissa, mut exp) = match unsigned.find(['E', 'e']) {
        Some(at) => (
            &unsigned[..at],
            unsigned[at + 1..]
                .parse::<i64>()
                .map_err(|_| EncodeError::Invalid(format!("invalid numeric value: {text}")))?,
        ),
        None => (unsigned, 0),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(mantissa.len());
    let mut seen_point = false;
    for b in mantissa.bytes() {
        match b {
            b'0'..=b'9' => {
                digits.push(b - b'0');
                if seen_point {
                    exp -= 1;
                }
            }
            b'.' => seen_point = true,
            _ => {
                return Err(EncodeError::Invalid(format!(
                    "invalid numeric value: {text}"
                )))
            }
        }
    }
    let mut intpart: Vec<u8>;
    let mut frac: Vec<u8>;
    if exp >= 0 {
        intpart = digits.clone();
        intpart.extend(std::iter::repeat_n(0u8, exp as usize));
        frac = Vec::new();
    } else {
        let k = digits.len() as i64 + exp;
        if k > 0 {
            intpart = digits[..k as usize].to_vec();
            frac = digits[k as usize..].to_vec();
        } else {
            intpart = Vec::new();
            frac = std::iter::repeat_n(0u8, (-k) as usize)
                .chain(digits.iter().copied())
                .collect();
        }
    }
    let dscale = if exp < 0 { (-exp) as usize } else { 0 };
    let pad_left = (4 - intpart.len() % 4) % 4;
    let mut all: Vec<u8> = std::iter::repeat_n(0u8, pad_left)
        .chain(intpart.drain(..))
        .collect();
    let int_groups = all.len() / 4;
    let pad_right = (4 - frac.len() % 4) % 4;
    frac.extend(std::iter::repeat_n(0u8, pad_right));
    all.extend(frac);
    let mut groups: Vec<u16> = all
        .chunks_exact(4)
        .map(|c| c.iter().fold(0u16, |acc, &d| acc * 10 + d as u16))
        .collect();
    let mut weight = int_groups as i64 - 1;
    let lead = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..lead);
    weight -= lead as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    if groups.len() > i16::MAX as usize
        || weight > i16::MAX as i64
        || weight < i16::MIN as i64
        || dscale > 0x3FFF
    {
        return Err(EncodeError::Invalid("numeric value out of range".into()));
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if sign == 1 { NEG } else { POS });
    out.put_u16(dscale as u16);
    for g in groups {
        out.put_u16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::digits_to_string;

    #[test]
    fn integers_with_dropped_zero_groups_get_an_exponent() {
        // 10000: one group [1] at weight 1
        assert_eq!(digits_to_string(&[1], 1, 0, false), "1E+4");
        // 120000: [12] at weight 1
        assert_eq!(digits_to_string(&[12], 1, 0, true), "-12E+4");
        // 20000000: [2000] at weight 1
        assert_eq!(digits_to_string(&[2000], 1, 0, false), "2000E+4");
        // 100000001: [1, 0, 1] at weight 2, all groups present
        assert_eq!(digits_to_string(&[1, 0, 1], 2, 0, false), "100000001");
    }

    #[test]
    fn fractions_keep_their_display_scale() {
        // 10000.00: [1] at weight 1, dscale 2
        assert_eq!(digits_to_string(&[1], 1, 2, false), "10000.00");
        // 0.0001: [1] at weight -1
        assert_eq!(digits_to_string(&[1], -1, 4, false), "0.0001");
        // -123.4500: [123, 4500] at weight 0, dscale 4
        assert_eq!(digits_to_string(&[123, 4500], 0, 4, true), "-123.4500");
        // zero with a scale
        assert_eq!(digits_to_string(&[], 0, 3, false), "0.000");
        assert_eq!(digits_to_string(&[], 0, 0, false), "0");
    }
}
