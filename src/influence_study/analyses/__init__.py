"""The paper's analyses: one module per analysis, pure functions from influence tables to statistics."""
