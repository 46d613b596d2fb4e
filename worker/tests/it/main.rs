//! End-to-end tests of the worker fleet against real PostgreSQL, real S3
//! (SeaweedFS), the real API and real HTTP webhook receivers.

mod fleet;
mod helpers;
mod pipeline;
mod ssrf;
mod webhooks;
mod zips;
