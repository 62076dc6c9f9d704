//! The bank-account example (work in progress).
fn main() {}
