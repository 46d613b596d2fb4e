//! End-to-end tests of the `paperhook` binary against the real system
//! (API, worker, PostgreSQL) started in-process.

mod commands;
mod helpers;
mod submit;
mod webhooks;
