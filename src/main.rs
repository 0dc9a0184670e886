//! The `tabula` binary: parse, set up logging, call the library, map the outcome to an exit status.
fn main() {}
