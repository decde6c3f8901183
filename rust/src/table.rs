//! A table as the kernels see it: a schema and the record batches of one Arrow stream, never
//! concatenated (concatenating would copy every column the kernel does not need).

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// One column of a [`Table`]: its chunks in stream order.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub chunks: Vec<ArrayRef>,
}

impl Table {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Table { schema, batches }
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The column `name`, or `MissingColumn` naming the table (`what`) and the columns it has.
    pub fn column(&self, name: &str, what: &str) -> Result<Column> {
        let idx = self.schema.index_of(name).map_err(|_| {
            let have: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::MissingColumn(format!(
                "column {name:?} is not in {what}; it has {have:?}. Pass the name of an existing column."
            ))
        })?;
        Ok(Column {
            name: name.to_string(),
            data_type: self.schema.field(idx).data_type().clone(),
            chunks: self.batches.iter().map(|b| b.column(idx).clone()).collect(),
        })
    }
}

impl Column {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
