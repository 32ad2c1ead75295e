//! mheap (placeholder while being written)
