//! Support code for the end-to-end tests: fresh, isolated databases on SQLite and
//! PostgreSQL, migrated with the real migrations, and fresh queues on every queue backend
//! ([`queue`]).
//!
//! Every test gets its own database (a new file, or a new PostgreSQL database with a unique
//! name), so tests run in parallel without seeing each other. PostgreSQL must be reachable
//! (`HOKUSAI_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`):
//! a test that needs it fails when it is not there; it never skips. [`fake_auth`] stands in
//! for auth.hokus.ai; [`bench`] holds measurements the benchmark binaries share; [`browser`]
//! drives a headless chromium through chromedriver.

pub mod app;
pub mod bench;
pub mod browser;
pub mod db;
pub mod fake_auth;
pub mod fault;
pub mod fuzz;
pub mod mlflow;
pub mod openapi;
pub mod process;
pub mod proxy;
pub mod queue;
pub mod scrape;
pub mod upstream;
pub mod world;

/// The allocator the shipped binary runs on (src/main.rs), so that the benchmark programs,
/// which link the API and the worker into binaries of their own, measure the allocator that
/// ships and not glibc's (docs/benchmarks.md, "The benchmarks' allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
