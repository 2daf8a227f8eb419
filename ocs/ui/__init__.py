"""The operations dashboard and agency portal: static pages under ``/ui/`` (Vue 3 and ECharts,
vendored ES modules) and the API they read (docs/dashboard.md)."""
