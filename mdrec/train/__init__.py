"""Training: examples from prepared tables, and the loop that fits any registered model."""
