"""Hydra discovers this plug-in in any app: it adds the registered task config packages to mnet_tasks' runs only."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class MnetTasksSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from mnet_tasks.config import config_dir
        from mnet_tasks.registry import config_packages

        ours = str(config_dir())
        if not any(element.path.removeprefix("file://") == ours for element in search_path.get_path()):
            return
        for package in config_packages():
            search_path.append("mnet_tasks-plugin", f"pkg://{package}")
