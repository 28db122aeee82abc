//! The server as a whole: the binary, health, observability, the OpenAPI document, the parsers
//! of outside input, the dashboard, the embedding example, connections, faults, TLS, and the demo
//! page in a real browser.

#![cfg(feature = "server")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod browser;
mod cli;
mod connection;
mod dashboard;
mod durations;
mod embedding;
mod faults;
mod health;
mod observability;
mod openapi;
mod parsers;
mod tls;
