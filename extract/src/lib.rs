//! paperhook-extract
