"""The load generator and reports (see DESIGN.md; not built yet)."""
