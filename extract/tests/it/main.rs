//! Integration tests on generated documents: digital PDFs, scans, and
//! hostile inputs. Run with `OMP_THREAD_LIMIT=1`.

mod api;
mod corpus;
mod digital;
mod robust;
mod scans;
