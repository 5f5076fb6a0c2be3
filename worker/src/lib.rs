//! The hokusai-serve worker: a stateless process that consumes deployment commands from the
//! queue and drives providers (DESIGN.md §1, §6).
//!
//! Start-up is a library type: [`Worker::build`] connects and checks the schema,
//! [`Worker::run_until_stopped`] works until the shutdown future resolves.

pub mod startup;

pub use startup::Worker;
