"""Airflow hooks: connections in, configured clients out."""
