//! date, time, timetz, timestamp, timestamptz, interval <-> datetime objects.
//!
//! PostgreSQL counts days and microseconds from 2000-01-01; ±infinity map to the `min`/`max`
//! of the Python type, and an interval's months count 30 days and its years 365 (asyncpg's
//! rules, so values compare equal across the two drivers).

use bytes::{BufMut, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{
    PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyTime, PyTimeAccess, PyTzInfo,
    PyTzInfoAccess,
};

use super::scalar::type_name;
use super::{EncodeError, EncodeResult};
use crate::pg::errors::{data_error, protocol_error};

const USECS_PER_DAY: i64 = 86_400_000_000;
const USECS_PER_SEC: i64 = 1_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

/// (year, month, day) of a day count from 1970-01-01 (proleptic Gregorian).
fn civil_from_unix_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day count from 1970-01-01 of a (year, month, day).
fn unix_days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn date_parts(py: Python<'_>, pg_days: i64) -> PyResult<(i32, u8, u8)> {
    let (y, m, d) = civil_from_unix_days(pg_days + PG_EPOCH_UNIX_DAYS);
    if !(1..=9999).contains(&y) {
        return Err(data_error(
            py,
            format!("date year {y} is outside the range Python supports"),
        ));
    }
    Ok((y as i32, m, d))
}

fn read<const N: usize>(py: Python<'_>, data: &[u8], at: usize, what: &str) -> PyResult<[u8; N]> {
    data.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| protocol_error(py, format!("invalid {what} value: {} bytes", data.len())))
}

fn date_max<'py>(py: Python<'py>, max: bool) -> PyResult<Bound<'py, PyAny>> {
    let cls = py.import("datetime")?.getattr("date")?;
    cls.getattr(if max { "max" } else { "min" })
}

fn datetime_max<'py>(py: Python<'py>, max: bool) -> PyResult<Bound<'py, PyAny>> {
    let cls = py.import("datetime")?.getattr("datetime")?;
    cls.getattr(if max { "max" } else { "min" })
}

pub fn decode_date(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() != 4 {
        return Err(protocol_error(py, "invalid date value"));
    }
    let days = i32::from_be_bytes(read(py, data, 0, "date")?);
    match days {
        i32::MAX => Ok(date_max(py, true)?.unbind()),
        i32::MIN => Ok(date_max(py, false)?.unbind()),
        _ => {
            let (y, m, d) = date_parts(py, days as i64)?;
            Ok(PyDate::new(py, y, m, d)?.into_any().unbind())
        }
    }
}

fn split_time(usecs: i64) -> (u8, u8, u8, u32) {
    let secs = usecs / USECS_PER_SEC;
    let us = (usecs % USECS_PER_SEC) as u32;
    (
        (secs / 3600) as u8,
        ((secs / 60) % 60) as u8,
        (secs % 60) as u8,
        us,
    )
}

pub fn decode_timestamp(py: Python<'_>, data: &[u8], tz: bool) -> PyResult<PyObject> {
    if data.len() != 8 {
        return Err(protocol_error(py, "invalid timestamp value"));
    }
    let usecs = i64::from_be_bytes(read(py, data, 0, "timestamp")?);
    match usecs {
        i64::MAX => return Ok(datetime_max(py, true)?.unbind()),
        i64::MIN => return Ok(datetime_max(py, false)?.unbind()),
        _ => {}
    }
    let days = usecs.div_euclid(USECS_PER_DAY);
    let (h, mi, s, us) = split_time(usecs.rem_euclid(USECS_PER_DAY));
    let (y, m, d) = date_parts(py, days)?;
    let utc;
    let tzinfo = if tz {
        utc = PyTzInfo::utc(py)?;
        Some(&*utc)
    } else {
        None
    };
    Ok(PyDateTime::new(py, y, m, d, h, mi, s, us, tzinfo)?
        .into_any()
        .unbind())
}

fn time_from_usecs<'py>(
    py: Python<'py>,
    usecs: i64,
    tzinfo: Option<&Bound<'py, PyTzInfo>>,
) -> PyResult<Bound<'py, PyTime>> {
    if !(0..USECS_PER_DAY).contains(&usecs) {
        return Err(data_error(
            py,
            "time value 24:00:00 or beyond cannot be represented in Python",
        ));
    }
    let (h, m, s, us) = split_time(usecs);
    PyTime::new(py, h, m, s, us, tzinfo)
}

pub fn decode_time(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() != 8 {
        return Err(protocol_error(py, "invalid time value"));
    }
    let usecs = i64::from_be_bytes(read(py, data, 0, "time")?);
    Ok(time_from_usecs(py, usecs, None)?.into_any().unbind())
}

pub fn decode_timetz(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() != 12 {
        return Err(protocol_error(py, "invalid timetz value"));
    }
    let usecs = i64::from_be_bytes(read(py, data, 0, "timetz")?);
    // the zone is stored in seconds WEST of UTC; PostgreSQL keeps it within ±15:59, and
    // Python's fixed offsets must stay strictly within a day
    let zone = i32::from_be_bytes(read(py, data, 8, "timetz")?);
    if !(-86_399..=86_399).contains(&zone) {
        return Err(protocol_error(
            py,
            format!("invalid timetz value: zone offset of {zone} seconds"),
        ));
    }
    let offset = PyDelta::new(py, 0, -zone, 0, true)?;
    let tz = PyTzInfo::fixed_offset(py, offset)?;
    Ok(time_from_usecs(py, usecs, Some(&tz))?.into_any().unbind())
}

pub fn decode_interval(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    if data.len() != 16 {
        return Err(protocol_error(py, "invalid interval value"));
    }
    let usecs = i64::from_be_bytes(read(py, data, 0, "interval")?);
    let days = i32::from_be_bytes(read(py, data, 8, "interval")?) as i64;
    let months = i32::from_be_bytes(read(py, data, 12, "interval")?) as i64;
    let total_days =
        days + (months / 12) * 365 + (months % 12) * 30 + usecs.div_euclid(USECS_PER_DAY);
    let rest = usecs.rem_euclid(USECS_PER_DAY);
    let secs = (rest / USECS_PER_SEC) as i32;
    let us = (rest % USECS_PER_SEC) as i32;
    let total_days = i32::try_from(total_days)
        .map_err(|_| data_error(py, "interval out of the range of datetime.timedelta"))?;
    Ok(PyDelta::new(py, total_days, secs, us, true)
        .map_err(|_| data_error(py, "interval out of the range of datetime.timedelta"))?
        .into_any()
        .unbind())
}

// ------------------------------------------------------------------ encoding

fn pg_days(d: &Bound<'_, PyDate>) -> i64 {
    unix_days_from_civil(
        d.get_year() as i64,
        d.get_month() as i64,
        d.get_day() as i64,
    ) - PG_EPOCH_UNIX_DAYS
}

fn is_extreme(value: &Bound<'_, PyAny>, max: bool, datetime: bool) -> PyResult<bool> {
    let py = value.py();
    let bound = if datetime {
        datetime_max(py, max)?
    } else {
        date_max(py, max)?
    };
    value.eq(bound)
}

pub fn encode_date(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let d = value.downcast::<PyDate>().map_err(|_| {
        EncodeError::Invalid(format!(
            "expected a datetime.date or datetime.datetime instance, got '{}'",
            type_name(value)
        ))
    })?;
    let days = pg_days(d);
    let (y, m, dd) = (d.get_year(), d.get_month(), d.get_day());
    if (y, m, dd) == (9999, 12, 31) && !value.is_instance_of::<PyDateTime>() {
        out.put_i32(i32::MAX);
    } else if (y, m, dd) == (1, 1, 1) && !value.is_instance_of::<PyDateTime>() {
        out.put_i32(i32::MIN);
    } else {
        out.put_i32(days as i32);
    }
    Ok(())
}

fn datetime_usecs(dt: &Bound<'_, PyDateTime>) -> i64 {
    let days = unix_days_from_civil(
        dt.get_year() as i64,
        dt.get_month() as i64,
        dt.get_day() as i64,
    ) - PG_EPOCH_UNIX_DAYS;
    days * USECS_PER_DAY
        + (dt.get_hour() as i64 * 3600 + dt.get_minute() as i64 * 60 + dt.get_second() as i64)
            * USECS_PER_SEC
        + dt.get_microsecond() as i64
}

pub fn encode_timestamp(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    if let Ok(dt) = value.downcast::<PyDateTime>() {
        if dt.get_tzinfo().is_some() {
            return Err(EncodeError::Invalid(
                "can't subtract offset-naive and offset-aware datetimes".into(),
            ));
        }
        if is_extreme(value, true, true)? {
            out.put_i64(i64::MAX);
        } else if is_extreme(value, false, true)? {
            out.put_i64(i64::MIN);
        } else {
            out.put_i64(datetime_usecs(dt));
        }
        return Ok(());
    }
    if let Ok(d) = value.downcast::<PyDate>() {
        out.put_i64(pg_days(d) * USECS_PER_DAY);
        return Ok(());
    }
    Err(EncodeError::Invalid(format!(
        "expected a datetime.date or datetime.datetime instance, got '{}'",
        type_name(value)
    )))
}

pub fn encode_timestamptz(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let py = value.py();
    let Ok(dt) = value.downcast::<PyDateTime>() else {
        if let Ok(d) = value.downcast::<PyDate>() {
            out.put_i64(pg_days(d) * USECS_PER_DAY);
            return Ok(());
        }
        return Err(EncodeError::Invalid(format!(
            "expected a datetime.date or datetime.datetime instance, got '{}'",
            type_name(value)
        )));
    };
    let Some(tz) = dt.get_tzinfo() else {
        if is_extreme(value, true, true)? {
            out.put_i64(i64::MAX);
            return Ok(());
        }
        if is_extreme(value, false, true)? {
            out.put_i64(i64::MIN);
            return Ok(());
        }
        // a naive datetime is local time, as datetime.astimezone() takes it
        let utc = PyTzInfo::utc(py)?;
        let aware = value.call_method1("astimezone", (utc,))?;
        let aware = aware.downcast::<PyDateTime>().map_err(PyErr::from)?;
        out.put_i64(datetime_usecs(aware));
        return Ok(());
    };
    if tz.is(&*PyTzInfo::utc(py)?) {
        // the common case needs no call into Python: UTC has no offset
        out.put_i64(datetime_usecs(dt));
        return Ok(());
    }
    let offset = value.call_method0(pyo3::intern!(py, "utcoffset"))?;
    let mut usecs = datetime_usecs(dt);
    if let Ok(delta) = offset.downcast::<PyDelta>() {
        usecs -= delta.get_days() as i64 * USECS_PER_DAY
            + delta.get_seconds() as i64 * USECS_PER_SEC
            + delta.get_microseconds() as i64;
    }
    out.put_i64(usecs);
    Ok(())
}

fn time_usecs(t: &Bound<'_, PyTime>) -> i64 {
    (t.get_hour() as i64 * 3600 + t.get_minute() as i64 * 60 + t.get_second() as i64)
        * USECS_PER_SEC
        + t.get_microsecond() as i64
}

pub fn encode_time(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let t = value.downcast::<PyTime>().map_err(|_| {
        EncodeError::Invalid(format!(
            "expected a datetime.time instance, got '{}'",
            type_name(value)
        ))
    })?;
    out.put_i64(time_usecs(t));
    Ok(())
}

pub fn encode_timetz(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let t = value.downcast::<PyTime>().map_err(|_| {
        EncodeError::Invalid(format!(
            "expected a datetime.time instance, got '{}'",
            type_name(value)
        ))
    })?;
    let offset = value.call_method0("utcoffset")?;
    let delta = offset.downcast::<PyDelta>().map_err(|_| {
        EncodeError::Invalid("'NoneType' object has no attribute 'utcoffset'".into())
    })?;
    let offset_secs = delta.get_days() as i64 * 86_400 + delta.get_seconds() as i64;
    out.put_i64(time_usecs(t));
    out.put_i32(-(offset_secs as i32));
    Ok(())
}

pub fn encode_interval(value: &Bound<'_, PyAny>, out: &mut BytesMut) -> EncodeResult {
    let d = value.downcast::<PyDelta>().map_err(|_| {
        EncodeError::Invalid(format!(
            "expected a datetime.timedelta instance, got '{}'",
            type_name(value)
        ))
    })?;
    out.put_i64(d.get_seconds() as i64 * USECS_PER_SEC + d.get_microseconds() as i64);
    out.put_i32(d.get_days());
    out.put_i32(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [
            -800_000i64,
            -10_957,
            -1,
            0,
            1,
            59,
            60,
            365,
            10_957,
            2_932_896,
        ] {
            let (y, m, d) = civil_from_unix_days(days);
            assert_eq!(unix_days_from_civil(y, m as i64, d as i64), days);
        }
        assert_eq!(civil_from_unix_days(PG_EPOCH_UNIX_DAYS), (2000, 1, 1));
        assert_eq!(civil_from_unix_days(0), (1970, 1, 1));
    }
}
