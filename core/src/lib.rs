//! paperhook-core
