"""The bundled model server (see DESIGN.md; not built yet)."""
