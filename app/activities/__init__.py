"""Reading stored activities: records, details and pages for the API and the dashboard."""
