//! Typed access to one Arrow chunk for key and value encoding: the crate's one typed view of Arrow
//! arrays, defined in [`crate::column`] and shared with the grouping layer.

pub use crate::column::{Cells, Chunk, IntCells, UIntCells};
