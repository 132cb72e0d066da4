"""The project folder's plugin: the package's Airflow plugin (report page, navigation entry, extra
link) for deployments that use this folder without installing the package (an Astronomer project
copies ``plugins/``). Where the package is installed, its ``airflow.plugins`` entry point registers
the plugin, and this file defines none (Airflow would refuse the second one by name, as an import
error)."""

from importlib.metadata import entry_points

if not any(ep.name == "walkme_heap" for ep in entry_points(group="airflow.plugins")):
    from walkme_heap.airflow_plugin import WalkMeHeapPlugin

    __all__ = ["WalkMeHeapPlugin"]
