"""HTML reports. Self-contained pages that open from disk with no network."""
