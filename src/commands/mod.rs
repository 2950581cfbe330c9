//! Client commands: each talks to a running registry over HTTP.

pub mod endpoint;
pub mod events;
pub mod features;
pub mod feedback;
pub mod gc;
pub mod model;
pub mod operator;
pub mod profile;
pub mod webhook;
