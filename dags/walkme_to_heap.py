"""Airflow DAGs replaying WalkMe exports into Heap: one DAG per pipeline in pipelines.yaml.

Which file is read: ``WALKME_HEAP_CONFIG``, else ``include/pipelines.yaml``.
"""

from walkme_heap.dag_factory import build_dags

globals().update(build_dags())
