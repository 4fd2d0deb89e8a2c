"""Reading stored activities: records, filters and pages for the read API and the dashboard."""
