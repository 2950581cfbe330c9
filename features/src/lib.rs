//! The online feature store (work in progress: the row encoding and materialization from CSV;
//! Parquet, the lookup at inference and the skew check come next — see the issue note).
//!
//! A feature view's row for one entity is stored under [`row_key`] as one value: a format byte,
//! a bitmap of missing features, then each present feature in the view's order as a
//! little-endian value of its type. One `MGET` reads a request's rows; decoding needs the view's
//! types, which the key's version pins.

pub mod encoding;
pub mod materialize;

pub use encoding::{CellError, DecodeError, Value, decode, encode, parse_cell, row_key};
pub use materialize::{MaterializeError, Materialized, materialize_csv};
