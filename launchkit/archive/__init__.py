"""Model archives (.mar), the layout torch-model-archiver writes: the only package that reads
and writes them. ``manifest`` (what an archive holds), ``reading`` (safe extraction, the
model-config.yaml), ``writing`` (``launchkit archive``, copies with new settings). No torch."""
