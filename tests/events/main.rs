//! Live events end to end (real SSE clients over TCP against a running server, every backend),
//! and the demo's `/stats` stream.

#![cfg(feature = "server")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod multi;
mod parity;
mod stats;
mod streams;
