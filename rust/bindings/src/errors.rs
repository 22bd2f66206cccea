//! The one place where core errors become Python exceptions.
//!
//! Bad values (parameters, command arguments, register blocks) are `ValueError` naming the key or
//! argument; using a loop in the wrong state is `RuntimeError`; an OS failure is `OSError`.

use bess_core::controller::CommandError;
use bess_core::params::ParamError;
use bess_core::runtime::RuntimeError;
use bess_core::schedule::ScheduleError;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

pub struct Error(PyErr);

impl From<Error> for PyErr {
    fn from(e: Error) -> Self {
        e.0
    }
}

impl From<ParamError> for Error {
    fn from(e: ParamError) -> Self {
        Self(PyValueError::new_err(e.to_string()))
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        Self(PyValueError::new_err(e.to_string()))
    }
}

impl From<ScheduleError> for Error {
    fn from(e: ScheduleError) -> Self {
        Self(PyValueError::new_err(format!("schedule: {e}")))
    }
}

impl From<RuntimeError> for Error {
    fn from(e: RuntimeError) -> Self {
        Self(match e {
            RuntimeError::Command(c) => PyValueError::new_err(c.to_string()),
            RuntimeError::Spawn(io) => PyOSError::new_err(format!("control thread: {io}")),
            other => PyRuntimeError::new_err(other.to_string()),
        })
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self(PyOSError::new_err(e.to_string()))
    }
}

/// A `ValueError` for argument `name`.
pub fn value_error(name: &str, message: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{name}: {message}"))
}
