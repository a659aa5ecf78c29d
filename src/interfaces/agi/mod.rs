//! AGI
