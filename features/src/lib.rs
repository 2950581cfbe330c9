//! The online feature store: a feature view's rows in Redis, written by materialization from a
//! CSV or Parquet file ([`materialize`]) and read at inference ([`online`]).
//!
//! A feature view's row for one entity is stored under [`row_key`] as one value: a format byte,
//! a bitmap of missing features, then each present feature in the view's order as a
//! little-endian value of its type. One `MGET` reads a request's rows; decoding needs the view's
//! types, which the key's version pins.

pub mod encoding;
pub mod materialize;
pub mod online;
mod parquet;

pub use encoding::{CellError, DecodeError, Value, as_number, decode, encode, parse_cell, row_key};
pub use materialize::{MaterializeError, Materialized, materialize};
pub use online::{LookupError, OnlineStore};
