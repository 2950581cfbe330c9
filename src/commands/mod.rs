//! Client commands: each talks to a running registry over HTTP.

pub mod events;
pub mod model;
