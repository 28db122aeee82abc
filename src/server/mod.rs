//! The server: redkit's capabilities composed into one HTTP service. Routes, the sample catalog,
//! the OpenAPI document, health, the demo page, the command line and [`run`] live here; the
//! capabilities below ([`crate::cache`], [`crate::ratelimit`], [`crate::auth`],
//! [`crate::events`]) import none of it and none of each other. [`bridge`] is where auth is
//! plugged into the limiter (the identity a request is limited by) and into live events (the
//! token verifier of private channels).

pub mod bridge;
pub mod catalog;
pub mod config;
pub mod http;
pub(crate) mod routes;
mod run;

pub use run::{init_tracing, run};
