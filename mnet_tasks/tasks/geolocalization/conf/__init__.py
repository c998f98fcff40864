"""The geolocalization configs, registered under the mnet_tasks.configs entry points."""
