"""Geolocation building blocks: adaptive S2 cell partitions, great-circle distances, Im2GPS metrics, the best
constant guess baseline, pictures."""
