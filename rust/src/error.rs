//! The one error type of the kernels. Every variant carries a message that says what was wrong and how
//! to fix it; the bindings map each variant to one class of `skewless.errors` (see `rust/src/py/errors.rs`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A column named by the caller is not in the input.
    MissingColumn(String),
    /// A column has a dtype the operation does not support, or two columns that must agree do not.
    Dtype(String),
    /// A timestamp column has no timezone: it is not an instant.
    NaiveTimestamp(String),
    /// An output column name would appear twice.
    ColumnClash(String),
    /// An argument is out of its domain (negative tolerance, unknown direction, ...).
    InvalidArgument(String),
    /// A key column holds a null where a key is required.
    NullKey(String),
    /// Data written to an existing view does not have the view's recorded schema.
    SchemaMismatch(String),
    /// The storage map is full and cannot grow.
    MapFull(String),
    /// The storage layer failed (I/O, LMDB).
    Storage(String),
    /// A bug: an invariant of the kernel did not hold.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::MissingColumn(m)
            | Error::Dtype(m)
            | Error::NaiveTimestamp(m)
            | Error::ColumnClash(m)
            | Error::InvalidArgument(m)
            | Error::NullKey(m)
            | Error::SchemaMismatch(m)
            | Error::MapFull(m)
            | Error::Storage(m)
            | Error::Internal(m) => m,
        };
        f.write_str(msg)
    }
}

impl std::error::Error for Error {}

/// An Arrow error is the caller's to fix when their data caused it (a value that does not cast or parse,
/// more string bytes than 32-bit offsets hold, an overflow); those become typed user errors that say
/// what to change. Anything else from Arrow means the engine built something wrong: `Internal`.
impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        use arrow::error::ArrowError as A;
        match e {
            A::CastError(m) | A::ParseError(m) => Error::Dtype(format!(
                "a value of the input cannot be converted ({m}); cast the column to the expected type first"
            )),
            A::OffsetOverflowError(n) => Error::InvalidArgument(format!(
                "a string or binary column holds more than 2 GiB in one result ({n} bytes of offsets); cast it \
                 to large_string / large_binary, or process the data in smaller parts"
            )),
            A::ArithmeticOverflow(m) => Error::InvalidArgument(format!(
                "a value of the input overflows ({m}); use a wider type or smaller values"
            )),
            A::DivideByZero => Error::InvalidArgument("the input divides by zero".into()),
            e => Error::Internal(format!("arrow: {e}")),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use arrow::error::ArrowError;

    use super::Error;

    #[test]
    fn arrow_errors_from_the_callers_data_are_user_errors() {
        assert!(matches!(
            Error::from(ArrowError::CastError("x".into())),
            Error::Dtype(_)
        ));
        assert!(matches!(
            Error::from(ArrowError::OffsetOverflowError(1 << 31)),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            Error::from(ArrowError::SchemaError("x".into())),
            Error::Internal(_)
        ));
    }
}
