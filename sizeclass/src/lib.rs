//! sizeclass (placeholder while being written)
