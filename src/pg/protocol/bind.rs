//! Bind messages: query arguments encoded by the statement's codecs, and the wording of an
//! argument that cannot be encoded.
//!
//! A Bind is built in full before anything is written, so a bad argument leaves nothing
//! half-sent and the connection usable. The error names `$n` (and the executemany element)
//! in asyncpg's words, which users and tests match on.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use super::messages;
use super::statement::StatementState;
use crate::pg::errors::{data_error, interface_error, Exc};
use crate::pg::types::EncodeError;

/// The protocol counts parameters in an Int16; PostgreSQL accepts at most this many.
pub(super) const MAX_ARGS: usize = i16::MAX as usize;

/// asyncpg's refusal of a query with more than [`MAX_ARGS`] arguments.
pub(super) fn too_many_arguments(py: Python<'_>) -> PyErr {
    interface_error(
        py,
        format!("the number of query arguments cannot exceed {MAX_ARGS}"),
    )
}

/// The unnamed statement may have been replaced since it was described (and a pooler may
/// have routed us to another backend): parse it again in the same batch.
pub(super) fn reparse_if_unnamed(
    py: Python<'_>,
    st: &StatementState,
    out: &mut BytesMut,
) -> PyResult<()> {
    if st.name.is_empty() {
        frontend::parse("", &st.query, st.param_oids.iter().copied(), out)
            .map_err(|e| interface_error(py, format!("invalid query: {e}")))?;
    }
    Ok(())
}

/// Where a Bind's arguments came from, for the error message naming a bad one.
#[derive(Clone, Copy)]
pub(super) enum Site {
    /// A single query.
    Query,
    /// Element `n` (0-based) of an executemany sequence.
    Many(usize),
    /// Statement `n` (0-based) of a pipeline; messages count from 1, as users do.
    Pipeline(usize),
}

/// Append a Bind of `args` to `state` as `portal`. `site` says which executemany element or
/// pipeline statement they are, for the error message. On failure `out` is left as it was.
pub(super) fn write_bind(
    py: Python<'_>,
    out: &mut BytesMut,
    portal: &str,
    state: &StatementState,
    args: &Bound<'_, PyAny>,
    site: Site,
) -> PyResult<()> {
    let tuple;
    let args = match args.downcast::<PyTuple>() {
        Ok(t) => t,
        Err(_) => {
            let is_sequence = args.is_instance_of::<pyo3::types::PyList>()
                || (args.downcast::<pyo3::types::PySequence>().is_ok()
                    && !args.is_instance_of::<PyString>()
                    && !args.is_instance_of::<PyBytes>());
            if !is_sequence {
                let got = args
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                let what = match site {
                    Site::Many(i) => format!(
                        "invalid input in executemany() argument sequence element #{i}: \
                         expected a sequence, got {got}"
                    ),
                    Site::Pipeline(i) => format!(
                        "pipeline statement #{}: query arguments must be a sequence, got {got}",
                        i + 1
                    ),
                    Site::Query => format!("query arguments must be a sequence, got {got}"),
                };
                return Err(data_error(py, what));
            }
            tuple = PyTuple::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
            &tuple
        }
    };
    if args.len() > MAX_ARGS {
        return Err(too_many_arguments(py));
    }
    let expected = state.param_oids.len();
    if args.len() != expected {
        let prefix = match site {
            Site::Pipeline(i) => format!("pipeline statement #{}: ", i + 1),
            _ => String::new(),
        };
        return Err(interface_error(
            py,
            format!(
                "{prefix}the server expects {expected} argument{} for this query, {} {} passed",
                if expected == 1 { "" } else { "s" },
                args.len(),
                if args.len() == 1 { "was" } else { "were" },
            ),
        ));
    }
    let start = out.len();
    let at = messages::begin(b'B', out);
    messages::put_cstr(portal, out);
    messages::put_cstr(&state.name, out);
    out.put_i16(expected as i16);
    for codec in &state.param_codecs {
        out.put_i16(codec.format() as i16);
    }
    out.put_i16(expected as i16);
    for (i, codec) in state.param_codecs.iter().enumerate() {
        let value = args.get_borrowed_item(i)?;
        if value.is_none() {
            out.put_i32(-1);
            continue;
        }
        let vat = messages::begin_value(out);
        if let Err(e) = codec.encode(&value, out) {
            out.truncate(start);
            return Err(encode_failure(py, i, site, &value, codec.type_name(), e));
        }
        messages::finish_value(vat, out);
    }
    out.put_i16(state.result_formats.len() as i16);
    for f in &state.result_formats {
        out.put_i16(*f);
    }
    messages::finish(at, out);
    Ok(())
}

/// The exception for argument `index` (0-based) that `type_name`'s codec refused.
fn encode_failure(
    py: Python<'_>,
    index: usize,
    site: Site,
    value: &Bound<'_, PyAny>,
    type_name: &str,
    err: EncodeError,
) -> PyErr {
    let shown = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable value>".into());
    let shown = if shown.chars().count() > 40 {
        format!("{}...", shown.chars().take(40).collect::<String>())
    } else {
        shown
    };
    let place = match site {
        Site::Many(i) => format!("${} in element #{i} of executemany() sequence", index + 1),
        Site::Pipeline(i) => format!("${} of pipeline statement #{}", index + 1, i + 1),
        Site::Query => format!("${}", index + 1),
    };
    let (reason, cause) = match err {
        EncodeError::Invalid(reason) => (reason, None),
        EncodeError::Unsupported(what) => {
            return Exc::UnsupportedClientFeatureError
                .err(py, format!("query argument {place}: {what}"));
        }
        EncodeError::Py(e) => {
            let reason = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
            (reason, Some(e))
        }
    };
    // asyncpg's wording, which users and tests match on; the PostgreSQL type goes in the
    // hint so the message still says what was expected
    let exc = data_error(
        py,
        format!("invalid input for query argument {place}: {shown} ({reason})"),
    );
    let _ = exc.value(py).setattr(
        "hint",
        format!("query argument ${} is of type {type_name}", index + 1),
    );
    if let Some(cause) = cause {
        exc.set_cause(py, Some(cause));
    }
    exc
}
