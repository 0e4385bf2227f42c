//! The `peregrine` command-line tool.
fn main() {}
