//! paperhook-extract: one document and one template in, typed fields out.
//!
//! Owns decoding (PDF, PNG, JPEG, TIFF), the per-page text model (PDF text
//! layer or Tesseract OCR), the four locators and post-processing. Leaves
//! storage, queues, billing and delivery to `core` and `worker`: no I/O
//! besides reading Tesseract's language data, no async.

pub mod post;
pub mod template;

pub use template::{Template, TemplateError};
