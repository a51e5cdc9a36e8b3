"""The `prepare` stage: clean, index, split and draw evaluation candidates, on Ray Data."""
