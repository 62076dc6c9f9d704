//! The Annals benchmark harness (work in progress).
fn main() {}
