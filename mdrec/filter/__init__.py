"""The filter stage: named filters, applied in order to the synthetic shards on Ray tasks."""
