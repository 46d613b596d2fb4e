//! Integration tests on generated documents: digital PDFs, scans, and
//! hostile inputs.

mod corpus;
mod digital;
