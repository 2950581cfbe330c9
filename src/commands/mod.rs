//! Client commands: each talks to a running registry over HTTP.

pub mod endpoint;
pub mod events;
pub mod model;
pub mod profile;
pub mod webhook;
