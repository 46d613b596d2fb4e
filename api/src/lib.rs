//! paperhook-api
