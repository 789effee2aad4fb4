"""Price freshness, provider price-list importers and organisation rate cards."""
