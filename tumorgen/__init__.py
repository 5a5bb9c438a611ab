"""tumorgen."""
