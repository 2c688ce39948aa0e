"""`launchkit optimize`: load a model (an archive, a TorchScript file, a bundled example), optimize
it with ``launchkit.model.transform``, measure it against the original (``measure``), gate on
accuracy and write the artifact (``command``). Imports torch."""
