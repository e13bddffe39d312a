"""Deduplication: corpus self-search above a threshold, duplicate counts, groups as
connected components, caption multiplicity per group, and an HTML report."""
