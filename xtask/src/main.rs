//! xtask (placeholder while being written)
fn main() {}
