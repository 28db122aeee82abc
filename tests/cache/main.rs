//! The cache: its semantics, tags, the catalog read through it, fail-safe answers, and two
//! instances that behave as one.

#![cfg(feature = "server")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod catalog;
mod coherence;
mod failsafe;
mod failsafe_copies;
mod failsafe_lastgood;
mod fleet;
mod semantics;
mod tags;
