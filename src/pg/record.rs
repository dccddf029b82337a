//! `Record`: the immutable row object, with asyncpg's semantics.
//!
//! A row indexes like a tuple (`r[0]`, `r[-1]`, `r[1:3]`), like a mapping by column name
//! (`r['id']`, `r.get`, `keys`/`values`/`items`, `name in r`), compares and hashes like the tuple
//! of its values, and cannot be pickled or built by users. Column names and the name -> index
//! map live once per statement in [`RecordDesc`], shared by every row.

use std::sync::Arc;

use super::row_values::RowValues;

use pyo3::exceptions::{PyIndexError, PyKeyError, PyTypeError};
use pyo3::impl_::pyclass_init::PyObjectInit;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::pyclass_init::PyClassInitializer;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyInt, PySlice, PyString, PyTuple, PyType};

/// Column names and their positions, shared by all rows of one statement.
pub struct RecordDesc {
    names: Py<PyTuple>,
    index: Py<PyDict>,
    len: usize,
}

impl RecordDesc {
    pub fn new(py: Python<'_>, names: &[&str]) -> PyResult<Arc<RecordDesc>> {
        let interned: Vec<Bound<'_, PyString>> =
            names.iter().map(|n| PyString::intern(py, n)).collect();
        let index = PyDict::new(py);
        for (i, name) in interned.iter().enumerate() {
            // with duplicate column names, lookup by name finds the last one (as asyncpg)
            index.set_item(name, i)?;
        }
        Ok(Arc::new(RecordDesc {
            len: interned.len(),
            names: PyTuple::new(py, interned)?.unbind(),
            index: index.unbind(),
        }))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column names, in order.
    pub fn names<'py>(&self, py: Python<'py>) -> Bound<'py, PyTuple> {
        self.names.bind(py).clone()
    }
}

/// A row of a query result.
#[pyclass(
    subclass,
    frozen,
    module = "asyncpg_rs.protocol.record",
    name = "Record"
)]
pub struct Record {
    desc: Arc<RecordDesc>,
    values: RowValues,
}

/// The parts of a Record, handed to a Python subclass's `__new__` (users cannot make them).
#[pyclass(frozen, module = "asyncpg_rs._native")]
pub struct RecordParts {
    desc: Arc<RecordDesc>,
    values: RowValues,
}

/// Record's type object. `Py::new` and `py.get_type` find it through pyo3's lazy type
/// object, whose initialisation checks cost some 80 instructions per row of a fetch.
static RECORD_TYPE: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// The hot path: one call per fetched row, with the values already in `values`.
pub fn record_from_values(
    py: Python<'_>,
    desc: &Arc<RecordDesc>,
    values: RowValues,
    cls: Option<&Bound<'_, PyType>>,
) -> PyResult<PyObject> {
    let record_type = RECORD_TYPE
        .get_or_init(py, || py.get_type::<Record>().unbind())
        .bind(py);
    match cls {
        Some(cls) if !cls.is(record_type) => {
            let parts = Py::new(
                py,
                RecordParts {
                    desc: desc.clone(),
                    values,
                },
            )?;
            Ok(cls.call1((parts,))?.unbind())
        }
        _ => {
            let init = PyClassInitializer::from(Record {
                desc: desc.clone(),
                values,
            });
            // SAFETY: `record_type` is Record's own type object, which `into_new_object`
            // requires (it allocates an instance of it and moves the Record in); the
            // pointer it returns is a new reference.
            unsafe {
                let ptr = PyObjectInit::into_new_object(init, py, record_type.as_type_ptr())?;
                Ok(PyObject::from_owned_ptr(py, ptr))
            }
        }
    }
}

/// A Record of `cls` (None: Record) from a vector of values.
pub fn new_record(
    py: Python<'_>,
    desc: &Arc<RecordDesc>,
    values: Vec<PyObject>,
    cls: Option<&Bound<'_, PyType>>,
) -> PyResult<PyObject> {
    record_from_values(py, desc, RowValues::from_vec(py, values)?, cls)
}

impl Record {
    fn values_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.values.tuple(py)
    }

    fn value(&self, py: Python<'_>, i: usize) -> PyObject {
        self.values
            .get(py, i)
            .map_or_else(|| py.None(), Bound::unbind)
    }

    fn position(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        match self.desc.index.bind(py).get_item(key)? {
            Some(i) => Ok(Some(i.extract()?)),
            None => Ok(None),
        }
    }
}

#[pymethods]
impl Record {
    #[new]
    #[pyo3(signature = (*args, **_kwargs))]
    fn py_new(args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        if args.len() == 1 {
            if let Ok(parts) = args.get_item(0)?.downcast::<RecordParts>() {
                let parts = parts.get();
                let py = args.py();
                return Ok(Record {
                    desc: parts.desc.clone(),
                    values: parts.values.clone_ref(py)?,
                });
            }
        }
        Err(PyTypeError::new_err(
            "cannot create 'asyncpg.protocol.record.Record' instances",
        ))
    }

    fn __len__(&self) -> usize {
        self.values.len()
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        if let Ok(i) = key.downcast::<PyInt>() {
            let i: isize = i
                .extract()
                .map_err(|_| PyIndexError::new_err("record index out of range"))?;
            let n = self.values.len() as isize;
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                return Err(PyIndexError::new_err("record index out of range"));
            }
            return Ok(self.value(py, j as usize));
        }
        if let Ok(slice) = key.downcast::<PySlice>() {
            return Ok(self.values_tuple(py)?.as_any().get_item(slice)?.unbind());
        }
        if key.is_instance_of::<PyString>() {
            if let Some(i) = self.position(py, key)? {
                return Ok(self.value(py, i));
            }
        }
        Err(PyKeyError::new_err(key.clone().unbind()))
    }

    fn __contains__(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.desc.index.bind(py).contains(name)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.values_tuple(py)?.into_any().try_iter()?.into_any())
    }

    /// The value of column `name`, or `default` when there is no such column.
    #[pyo3(signature = (name, default=None))]
    fn get(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<PyObject>,
    ) -> PyResult<PyObject> {
        match self.position(py, name)? {
            Some(i) => Ok(self.value(py, i)),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    /// An iterator over the column names.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self
            .desc
            .names
            .bind(py)
            .clone()
            .into_any()
            .try_iter()?
            .into_any())
    }

    /// An iterator over the values.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.__iter__(py)
    }

    /// An iterator over `(name, value)` pairs.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let names = self.desc.names.bind(py);
        let pairs: Vec<Bound<'py, PyTuple>> = names
            .iter()
            .zip(self.values.iter(py))
            .map(|(n, v)| PyTuple::new(py, [n, v]))
            .collect::<PyResult<_>>()?;
        Ok(PyTuple::new(py, pairs)?.into_any().try_iter()?.into_any())
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.values_tuple(py)?.hash()
    }

    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<PyObject> {
        let other_values = if let Ok(rec) = other.downcast::<Record>() {
            rec.get().values_tuple(py)?
        } else if let Ok(t) = other.downcast::<PyTuple>() {
            t.clone()
        } else {
            return Ok(py.NotImplemented());
        };
        Ok(self
            .values_tuple(py)?
            .rich_compare(other_values, op)?
            .unbind())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let cls = slf.get_type().name()?.to_string();
        let mut out = format!("<{cls}");
        for (name, value) in this.desc.names.bind(py).iter().zip(this.values.iter(py)) {
            out.push(' ');
            out.push_str(&name.str()?.to_cow()?);
            out.push('=');
            out.push_str(&value.repr()?.to_cow()?);
        }
        out.push('>');
        Ok(out)
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<PyObject> {
        let qual = slf.get_type().fully_qualified_name()?.to_string();
        Err(PyTypeError::new_err(format!(
            "cannot pickle {qual} objects"
        )))
    }
}

/// `_create_record(mapping, values)`: a Record from a name -> index mapping and a tuple
/// (the constructor asyncpg's own tests use).
#[pyfunction]
#[pyo3(signature = (mapping, values, record_class=None))]
fn create_record(
    py: Python<'_>,
    mapping: Option<&Bound<'_, PyAny>>,
    values: &Bound<'_, PyTuple>,
    record_class: Option<&Bound<'_, PyType>>,
) -> PyResult<PyObject> {
    let mut names: Vec<(usize, String)> = Vec::new();
    if let Some(mapping) = mapping {
        for item in mapping.call_method0("items")?.try_iter()? {
            let (name, idx): (String, usize) = item?.extract()?;
            names.push((idx, name));
        }
    }
    names.sort();
    if mapping.is_none() {
        // a row without column names: index access only
        let desc = RecordDesc::new(py, &[])?;
        return new_record(
            py,
            &desc,
            values.iter().map(|v| v.unbind()).collect(),
            record_class,
        );
    }
    if names.len() != values.len() || names.iter().enumerate().any(|(i, (idx, _))| *idx != i) {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "invalid record mapping",
        ));
    }
    let refs: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    let desc = RecordDesc::new(py, &refs)?;
    new_record(
        py,
        &desc,
        values.iter().map(|v| v.unbind()).collect(),
        record_class,
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Record>()?;
    m.add_class::<RecordParts>()?;
    m.add_function(wrap_pyfunction!(create_record, m)?)?;
    Ok(())
}
