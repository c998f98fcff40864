"""Great-circle geometry on a spherical earth: distances, and latitude/longitude <-> unit vectors.

Everything takes latitude and longitude in degrees and broadcasts like torch; distances are in kilometres.
"""

from __future__ import annotations

import math

import torch

# The IUGG mean earth radius, the usual choice for spherical great-circle distances (Im2GPS, PlaNet).
EARTH_RADIUS_KM = 6371.0088


def is_valid_location(lat: float, lon: float) -> bool:
    """A latitude/longitude pair in degrees that names a place: finite, |lat| <= 90 and |lon| <= 180."""
    return math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180


def great_circle_km(
    lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor, radius_km: float = EARTH_RADIUS_KM
) -> torch.Tensor:
    """Haversine distance, computed as ``2 atan2(sqrt(h), sqrt(1 - h))``: exact 0 for equal points and no
    ``acos`` round-off for near or antipodal ones. Inputs are promoted to float64 (1 m at earth scale)."""
    lat1, lon1, lat2, lon2 = (torch.deg2rad(torch.as_tensor(v, dtype=torch.float64)) for v in (lat1, lon1, lat2, lon2))
    half_dlat = torch.sin((lat2 - lat1) / 2)
    half_dlon = torch.sin((lon2 - lon1) / 2)
    h = (half_dlat**2 + torch.cos(lat1) * torch.cos(lat2) * half_dlon**2).clamp(0.0, 1.0)
    return 2 * radius_km * torch.atan2(h.sqrt(), (1 - h).sqrt())


def to_unit_vectors(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` points on the unit sphere (x towards 0°N 0°E, z towards the north pole)."""
    lat, lon = (torch.deg2rad(torch.as_tensor(v, dtype=torch.float64)) for v in (lat, lon))
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=-1)


def to_lat_lon(vectors: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` latitude and longitude in degrees of ``(..., 3)`` vectors of any non-zero length."""
    x, y, z = vectors.unbind(-1)
    lat = torch.atan2(z, torch.hypot(x, y))
    lon = torch.atan2(y, x)
    return torch.rad2deg(torch.stack([lat, lon], dim=-1))
