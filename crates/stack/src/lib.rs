//! The stack file.
