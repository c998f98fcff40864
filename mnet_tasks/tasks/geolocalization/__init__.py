"""Photo geolocation, PlaNet style: adaptive S2 cells, Im2GPS distance metrics."""

from mnet_tasks.tasks.geolocalization.data import GeoDataModule
from mnet_tasks.tasks.geolocalization.module import GeolocalizationTask

__all__ = ["GeoDataModule", "GeolocalizationTask"]
