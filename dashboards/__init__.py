"""Dashboards: the live andon board and its pages (served by the API), and Grafana provisioning."""
