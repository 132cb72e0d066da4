"""walkme-heap: replay exported WalkMe event records into Heap Analytics from Apache Airflow."""

__version__ = "0.1.0"
